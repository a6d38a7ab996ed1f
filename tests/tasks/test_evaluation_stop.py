"""A stop request (SIGINT/SIGTERM) during the evaluation: honoured at the next generation batch
or between policies, as a training loop honours it after a step, and no stage starts after it."""

from collections.abc import Iterator

import pytest
from mlflow import MlflowClient

from instructflow.models.checkpoints import TrainingInterrupted, clear_stop, request_stop
from instructflow.tasks import evaluation, tracking
from instructflow.tasks.evaluation import EvalConfig, Policy, sample
from instructflow.tasks.stage import DONE_MARKER
from tests.conftest import use_project


@pytest.fixture(autouse=True)
def no_stop_left() -> Iterator[None]:
    yield
    clear_stop()


def stop_at_call(monkeypatch, name: str, n: int) -> list[str]:
    """Make the evaluation's `name` request a stop at its `n`th call; returns the calls' log."""
    real, calls = getattr(evaluation, name), []

    def counted(*args, **kwargs):
        calls.append(name)
        result = real(*args, **kwargs)
        if len(calls) == n:
            request_stop()
        return result

    monkeypatch.setattr(evaluation, name, counted)
    return calls


def test_a_stop_request_ends_sampling_after_the_running_batch(tiny_dirs, monkeypatch):
    # given a policy sampled in 3 batches, whose first batch sees a stop request
    sft_dir, _ = tiny_dirs
    batches = stop_at_call(monkeypatch, "generate", 1)
    cfg = EvalConfig(max_new_tokens=4, batch_size=2)
    # when it is sampled
    with pytest.raises(TrainingInterrupted, match=r"while sampling sft \(2/6 samples\)"):
        sample(Policy("sft", sft_dir), ["reverse stone"] * 6, cfg, seed=0)
    # then no other batch was generated
    assert batches == ["generate"]


def test_an_evaluation_stopped_between_policies_ends_killed_and_unfinished(
    tiny_dirs, generated_root, tmp_path, monkeypatch
):
    # given an evaluation of two policies whose first one's scoring sees a stop request
    use_project(monkeypatch, tmp_path)
    sft_dir, rm_dir = tiny_dirs
    stop_at_call(monkeypatch, "public_suite_accuracy", 1)
    sampled = stop_at_call(monkeypatch, "generate", 0)
    cfg = EvalConfig(max_prompts=4, max_new_tokens=4, samples_per_prompt=1)
    policies = {"a": {"model_dir": str(sft_dir)}, "b": {"model_dir": str(sft_dir)}}
    out = tmp_path / "runs" / "evaluation" / "key"
    profile = generated_root / "data" / "smoke"
    # when the stage runs
    with pytest.raises(TrainingInterrupted, match="after judging a"):
        evaluation.evaluation_task.fn(
            policies, str(sft_dir), str(rm_dir), str(profile), cfg, 0, str(out), None
        )
    # then policy b was never sampled (the SFT reference and a were: one batch each)
    assert len(sampled) == 2
    # and the stage's MLflow run ended KILLED, as an interrupted training stage's does
    client = MlflowClient(tracking.tracking_uri())
    (run,) = client.search_runs([tracking.setup()], "tags.stage = 'evaluation'")
    assert run.info.status == "KILLED"
    # and it is not done: the next run evaluates again instead of reading a partial result
    assert not (out / DONE_MARKER).exists()


def test_no_stage_starts_once_a_stop_was_requested():
    from instructflow.flows.stages import run_stage

    # given a stop request the running stage finished without honouring
    started = []
    request_stop()
    # when the flow goes on to the registry stage
    with pytest.raises(TrainingInterrupted, match="stopped before stage registry started"):
        run_stage(lambda **kwargs: started.append(kwargs), "registry", {}, {}, "parent")
    # then the stage's task was never called
    assert started == []
