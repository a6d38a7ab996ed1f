"""The PPO stage config and what the trainer receives from it: one declaration, one set of values."""

import pytest
from pydantic import ValidationError

from instructflow.flows.params import PipelineParams
from instructflow.models.ppo_config import PPOHyper
from instructflow.tasks.ppo_config import PPOStageConfig, trainer_hyper


def _another(name: str, default):
    """A valid value other than the default."""
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 1
    if isinstance(default, float):
        return default / 2 if default else 0.5
    return {"reward_normalization": "running", "precision": "bf16"}[name]


def test_the_trainer_gets_exactly_the_stage_configs_math_settings() -> None:
    # given: a stage config with every math setting moved off its default, and stage-only ones set
    changed = {name: _another(name, field.default) for name, field in PPOHyper.model_fields.items()}
    cfg = PPOStageConfig(**changed, eval_every=3, kl_price=0.5)
    # when: the trainer's settings are built from it
    hyper = trainer_hyper(cfg)
    # then: the same value reaches every math field, and no stage-only field comes along
    assert type(hyper) is PPOHyper
    assert hyper.model_dump() == changed
    assert set(PPOStageConfig.model_fields) - set(PPOHyper.model_fields) >= {"eval_every", "lora"}


def test_defaults_are_declared_once() -> None:
    # the stage config's math defaults are PPOHyper's own: no second set to drift apart
    for name, field in PPOHyper.model_fields.items():
        assert PPOStageConfig.model_fields[name].default == field.default, name
    assert trainer_hyper(PPOStageConfig()) == PPOHyper()


def test_a_minibatch_larger_than_the_rollout_is_refused_on_the_sizes_the_run_uses() -> None:
    # the trainer's settings refuse it; the stage's settings as sent do not (a profile
    # resizes both), the run's parameters do, with the profile's sizes
    with pytest.raises(
        ValidationError, match=r"minibatch_size \(16\) cannot exceed rollout_batch \(8\)"
    ):
        PPOHyper(rollout_batch=8, minibatch_size=16)
    assert PPOStageConfig(rollout_batch=8, minibatch_size=16).minibatch_size == 16
    with pytest.raises(ValidationError, match=r"ppo.minibatch_size = 16 is more than"):
        PipelineParams(ppo={"rollout_batch": 8, "minibatch_size": 16})
