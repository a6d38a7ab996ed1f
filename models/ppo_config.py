"""The settings of PPO / PPO-ptx that the math reads: declared once, documented, with the defaults runs use.

`instructflow.tasks.ppo_config.PPOStageConfig` extends this model with what only the
stage reads (evaluation, checkpoint choice, stopping, LoRA); the trainer
receives a `PPOHyper` (the stage builds it in one place), plus the two
per-run values that are not configuration: `ptx_gamma` (0 for PPO, > 0 for
PPO-ptx: one config drives both stages) and the pipeline's `seed`.

The defaults are sized for profile "tiny" (about 2-4 minutes on 1-2 CPU
threads); why they are what they are is in docs/decisions.md.
"""

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from instructflow.models.runtime_fields import Precision, precision_field

Normalization = Literal["none", "running", "reference"]


class PPOHyper(BaseModel):
    """Hyperparameters of PPO / PPO-ptx."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    iterations: int = Field(
        150, ge=1, description="Maximum rollout + update cycles (the stopping rule may end sooner)."
    )
    rollout_batch: int = Field(
        64, ge=1, description="Training prompts (one sampled response each) per iteration."
    )
    minibatch_size: int = Field(
        32,
        ge=1,
        description="Responses per gradient step: rollout_batch / minibatch_size steps per epoch.",
    )
    ppo_epochs: int = Field(
        2,
        ge=1,
        description="Passes over each rollout batch (reusing samples is what the clip makes safe).",
    )
    lr: float = Field(1e-4, gt=0, description="Policy learning rate (AdamW, constant).")
    value_lr: float = Field(1e-4, gt=0, description="Value-model learning rate (AdamW, constant).")
    weight_decay: float = Field(
        0.0,
        ge=0,
        description="AdamW weight decay of both networks (0: stay close to the initialisation).",
    )
    clip_eps: float = Field(
        0.2,
        gt=0,
        description="Surrogate clip range: ratios outside [1 - eps, 1 + eps] earn nothing.",
    )
    value_clip: float = Field(
        0.2,
        gt=0,
        description="Value clip range (in normalised reward units): how far a value may move from its rollout value per update.",
    )
    gae_lambda: float = Field(
        0.95, ge=0, le=1, description="GAE lambda (bias/variance of the advantages)."
    )
    gamma: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Per-token discount (1: the episode is one short response).",
    )
    kl_beta: float = Field(
        0.2,
        ge=0,
        description="KL penalty coefficient beta on normalised rewards (the initial value if adaptive_kl).",
    )
    adaptive_kl: bool = Field(
        False,
        description="Adapt beta so the rollout KL tracks target_kl (Ziegler et al. 2019).",
    )
    target_kl: float = Field(
        1.0,
        gt=0,
        description="Target KL(pi || pi_SFT) per response (nats) for the adaptive controller.",
    )
    kl_horizon: int = Field(
        10000,
        ge=1,
        description="Adaptive controller horizon (samples): larger moves beta more slowly.",
    )
    ptx_batch_size: int = Field(
        8, ge=1, description="Packed pretraining blocks per policy step (PPO-ptx only)."
    )
    max_new_tokens: int = Field(
        24, ge=1, description="Longest response sampled (as in evaluation)."
    )
    temperature: float = Field(
        1.0,
        gt=0,
        description="Sampling temperature (as in evaluation); log-probs are computed at the same temperature.",
    )
    no_eos_penalty: float = Field(
        1.0,
        ge=0,
        description="Subtracted from the normalised score of a response cut off without EOS.",
    )
    reward_normalization: Normalization = Field(
        "reference",
        description='"reference": RM score standardised by the SFT samples\' mean/std, fixed at the start (a stationary reward); "running": the same statistics, updated every rollout; "none": the raw RM score.',
    )
    invert_reward: bool = Field(
        False,
        description="Train against the negated RM score (a deliberately worse policy, to test the promotion gate); checkpoint choice sees the negated score too.",
    )
    reference_samples: int = Field(
        256,
        ge=1,
        description="SFT samples that fit the reference/running reward normalisation at the start.",
    )
    grad_clip: float = Field(1.0, gt=0, description="Max global gradient norm, per network.")
    precision: Precision = precision_field()

    @model_validator(mode="after")
    def _minibatch_fits(self) -> Self:
        if self.minibatch_size > self.rollout_batch:
            raise ValueError(
                f"minibatch_size ({self.minibatch_size}) cannot exceed rollout_batch"
                f" ({self.rollout_batch})"
            )
        return self
