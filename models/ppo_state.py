"""A PPO trainer's whole state as one dict, and back: what a resume checkpoint holds.

Saving and restoring the random generators too is what makes a resumed run
end exactly where an uninterrupted one ends (tests/models/test_ppo.py).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from instructflow.models.ppo import PPOTrainer


def trainer_state(trainer: PPOTrainer) -> dict:
    """Everything needed to continue exactly where this run is: weights, optimizers, beta, RNGs.

    Weight and optimizer tensors are shared with the live trainer (as
    `nn.Module.state_dict` does): save or copy them before training on.
    """
    rng = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "generator": trainer.generator.get_state(),
    }
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "iteration": trainer.iteration,
        "stopped": trainer.stopped,
        "policy": trainer.unwrapped_policy.state_dict(),
        "value_model": trainer.unwrapped_value_model.state_dict(),
        "policy_optimizer": trainer.policy_opt.state_dict(),
        "value_optimizer": trainer.value_opt.state_dict(),
        "kl_beta": trainer.kl_ctl.beta,
        "normalizer": {
            "mean": trainer.normalizer.mean,
            "var": trainer.normalizer.var,
            "count": trainer.normalizer.count,
        },
        "value_affine": [trainer.value_shift, trainer.value_scale],
        "rng": rng,
    }


def load_trainer_state(trainer: PPOTrainer, state: dict) -> None:
    """Put a `trainer_state` dict back into a trainer built with the same settings."""
    trainer.iteration, trainer.stopped = int(state["iteration"]), bool(state["stopped"])
    trainer.unwrapped_policy.load_state_dict(state["policy"])
    trainer.unwrapped_value_model.load_state_dict(state["value_model"])
    trainer.policy_opt.load_state_dict(state["policy_optimizer"])
    trainer.value_opt.load_state_dict(state["value_optimizer"])
    trainer.kl_ctl.beta = float(state["kl_beta"])
    trainer.normalizer.mean = float(state["normalizer"]["mean"])
    trainer.normalizer.var = float(state["normalizer"]["var"])
    trainer.normalizer.count = int(state["normalizer"]["count"])
    trainer.value_shift, trainer.value_scale = (float(x) for x in state["value_affine"])
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    trainer.generator.set_state(rng["generator"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
