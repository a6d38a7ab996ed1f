"""The SFT stage's settings (`SFTConfig`), also the baselines'.

Pydantic only, so that the run settings (flows/params.py) validate without the
stage's libraries; `instructflow.tasks.sft` runs the stage and imports it from here.
"""

from pydantic import Field

from instructflow.tasks.training_options import SupervisedOptions


class SFTConfig(SupervisedOptions):
    """Supervised fine-tuning on demonstrations."""

    # batch_size, lora, precision, torch_compile, gradient_checkpointing: declared by SupervisedOptions.

    epochs: int = Field(
        16,
        ge=1,
        description="Passes over the demonstrations (InstructGPT: 16, choosing the checkpoint on validation).",
    )
    lr: float = Field(2e-3, gt=0, description="Peak learning rate.")
    checkpoint_every: int = Field(
        100,
        ge=1,
        description="Steps between resume checkpoints (a killed run continues from the last).",
    )
