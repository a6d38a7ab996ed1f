"""The base-model stage's settings (`BaseModelConfig`).

Pydantic only, so that the run settings (flows/params.py) validate without the
stage's libraries; `instructflow.tasks.base_model` runs the stage and imports it from here.
"""

from pydantic import Field

from instructflow.models.lm_size import GPT2Size


class BaseModelConfig(GPT2Size):
    """How the embedded base model is built (ignored when `base_model` points at a directory).

    Its shape (n_layer, n_head, n_embd, n_positions) is declared by GPT2Size.
    """

    vocab_size: int = Field(
        1024, ge=32, description="BPE vocabulary size (digits are always single tokens)."
    )
    block_size: int = Field(128, ge=2, description="Length of the packed pretraining blocks.")
    steps: int = Field(600, ge=1, description="Pretraining optimizer steps.")
    batch_size: int = Field(32, ge=1, description="Blocks per pretraining step.")
    lr: float = Field(2e-3, gt=0, description="Peak learning rate (AdamW, warm-up then cosine).")
    checkpoint_every: int = Field(
        100,
        ge=1,
        description="Steps between resume checkpoints (a killed run continues from the last).",
    )
