"""Which PPO checkpoint to keep, and when to stop: decided by the reward model on held-out prompts.

Every `eval_every` iterations the stage records a point (KL to SFT,
validation RM score, validation gold score). The gold score is the world's
hidden truth: it is plotted and reported, but never chooses a checkpoint or
stops the run. Those use the RM only:

- checkpoint: each point is worth the RLHF objective on held-out prompts,
  (RM - RM_SFT) / sd - kl_price * KL, with sd the spread of SFT's validation
  RM scores (so the price does not depend on the RM's scale). A later point
  replaces the kept one if it raises this by more than `min_gain` and stays
  within `kl_budget`. The price makes extra KL pay for itself in RM score:
  once the RM gain per nat falls below `kl_price` (diminishing returns, where
  over-optimisation starts) later checkpoints are not taken;
- stopping: no kept checkpoint for `patience` evaluations, or KL past `kl_budget`.
"""

import torch

from instructflow.tasks.ppo_config import PPOStageConfig


def new_history() -> dict:
    return {
        "points": [],
        "chosen": None,
        "rm_scale": None,
        "evals_without_gain": 0,
        "stop_reason": None,
        "resumed_at": [],
    }


def record_evaluation(
    history: dict, point: dict, rm_scores: torch.Tensor, cfg: PPOStageConfig
) -> bool:
    """Add an evaluation point; update the kept checkpoint and the stopping rule. True: keep this policy.

    Each point is worth objective = (RM - RM_SFT) / scale - kl_price * KL, where
    scale is the spread of the SFT policy's validation RM scores (the first
    point): the RLHF objective on held-out prompts, in RM units that do not
    depend on how the RM happens to be scaled. A point replaces the kept one
    if it raises the objective by more than `min_gain` within `kl_budget`.
    """
    points = history["points"]
    if not points:  # the SFT policy: its scores set the scale
        history["rm_scale"] = max(float(rm_scores.std()), 1e-6) if rm_scores.numel() > 1 else 1.0
    sft_rm = points[0]["rm"] if points else point["rm"]
    point["objective"] = (point["rm"] - sft_rm) / history["rm_scale"] - cfg.kl_price * point["kl"]
    points.append(point)
    over_budget = cfg.kl_budget is not None and point["kl"] > cfg.kl_budget
    chosen = history["chosen"]
    gain = chosen is None or point["objective"] > points[chosen]["objective"] + cfg.min_gain
    keep = gain and not over_budget
    if keep:
        history["chosen"], history["evals_without_gain"] = len(points) - 1, 0
    else:
        history["evals_without_gain"] += 1
    if over_budget:
        history["stop_reason"] = f"validation KL {point['kl']:.2f} > kl_budget {cfg.kl_budget}"
    elif history["evals_without_gain"] >= cfg.patience:
        history["stop_reason"] = (
            f"validation objective did not improve by > {cfg.min_gain} in {cfg.patience} evaluations"
        )
    return keep


def kept_start_note(stage_name: str, metrics: dict[str, float]) -> str | None:
    """What to tell a user whose PPO stage kept its starting weights (None when it did not).

    The selection above may keep the SFT policy itself (iteration 0): then the
    stage's model is SFT's weights, and any change to PPO's settings that does not
    change this leaves the candidate, its figures and the gate exactly as they were.
    """
    chosen = metrics.get(f"{stage_name}/chosen_iteration")
    if chosen != 0:  # a later iteration, or no selection at all (None)
        return None
    run = metrics.get(f"{stage_name}/iterations_run")
    ran = f"{int(run)} iterations" if run is not None else "its iterations"
    return (
        f"{stage_name} kept its starting weights (SFT's): none of {ran} raised the reward "
        "model's objective on held-out prompts by more than ppo.min_gain, so the candidate "
        "is SFT's weights; PPO settings change it only once an iteration is kept"
    )
