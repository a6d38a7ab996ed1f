"""The reward-model stage's settings (`RewardModelConfig`).

Pydantic only, so that the run settings (flows/params.py) validate without the
stage's libraries; `instructflow.tasks.reward_model` runs the stage and imports it from here.
"""

from pydantic import Field

from instructflow.tasks.training_options import SupervisedOptions


class RewardModelConfig(SupervisedOptions):
    """Reward-model training."""

    # batch_size, lora, precision, torch_compile, gradient_checkpointing: declared by SupervisedOptions.

    epochs: int = Field(2, ge=1, description="Passes over the comparisons (InstructGPT: 1).")
    lr: float = Field(5e-4, gt=0, description="Peak learning rate.")
    checkpoint_every: int = Field(
        50,
        ge=1,
        description="Steps between resume checkpoints (a killed run continues from the last).",
    )
