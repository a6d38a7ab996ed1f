"""The PPO / PPO-ptx stage's configuration: the math's settings plus what only the stage reads.

`PPOStageConfig` extends `instructflow.models.ppo_config.PPOHyper`, so every field is
declared (with its description and default) exactly once; `trainer_hyper`
is the one place that hands the trainer its part.
"""

from pydantic import Field

from instructflow.models.ppo_config import PPOHyper
from instructflow.tasks.training_options import LoraOptions


class PPOStageConfig(PPOHyper):
    """PPO / PPO-ptx (defaults sized for profile "tiny": about 2-4 minutes on 1-2 CPU threads).

    The math's settings are inherited from PPOHyper; below: pretraining
    blocks, validation, checkpoint choice, stopping and LoRA.
    """

    def _minibatch_fits(self) -> "PPOStageConfig":
        """Not checked on the settings as sent: a profile resizes rollout_batch and
        minibatch_size where they are left at their defaults (PipelineParams.stage), so
        PipelineParams checks the sizes the run will use (the trainer's PPOHyper checks again)."""
        return self

    ptx_block_size: int = Field(
        128, ge=2, description="Tokens per packed pretraining block (PPO-ptx only)."
    )
    eval_every: int = Field(
        5, ge=1, description="Iterations between validation evaluations (checkpoint choice, curve)."
    )
    eval_prompts: int | None = Field(
        256, ge=1, description="Validation prompts per evaluation (None: all)."
    )
    checkpoint_every: int = Field(
        5, ge=1, description="Iterations between resumable checkpoints in out_dir/resume."
    )
    kl_price: float = Field(
        0.2,
        ge=0,
        description="Checkpoint choice: validation RM gain (in SFT-sample RM standard deviations) one nat of KL to SFT must buy.",
    )
    min_gain: float = Field(
        0.0,
        description="A later checkpoint is kept only if it raises the validation objective (RM gain - kl_price * KL) by more than this.",
    )
    patience: int = Field(
        4, ge=1, description="Stop after this many evaluations without a kept checkpoint."
    )
    kl_budget: float | None = Field(
        None,
        gt=0,
        description="Stop past this validation KL to SFT (nats); such a point is never kept. None: no budget.",
    )
    lora: LoraOptions | None = Field(
        None,
        description="LoRA adapters on the policy and the value model (null: full fine-tuning). The SFT reference is the policy with adapters off, the reward model the value model with adapters off: one copy of each network. The kept policy is saved merged.",
    )


SMOKE_OVERRIDES: dict = {
    "iterations": 4,
    "rollout_batch": 16,
    "minibatch_size": 8,
    "ppo_epochs": 2,
    "eval_every": 2,
    "eval_prompts": 32,
    "checkpoint_every": 2,
    "reference_samples": 32,
    "ptx_batch_size": 4,
}
"""Overrides for profile "smoke": the stage runs in about 20 s."""


def trainer_hyper(cfg: PPOStageConfig) -> PPOHyper:
    """The trainer's settings: the PPOHyper fields of the stage config, nothing else."""
    return PPOHyper(**{name: getattr(cfg, name) for name in PPOHyper.model_fields})
