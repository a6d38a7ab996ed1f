"""The shape of a GPT-2 built from scratch (`GPT2Size`), apart from `instructflow.models.lm`.

Pydantic only, so that the run settings (flows/params.py) validate without
importing torch or transformers; `instructflow.models.lm.build_gpt2` reads it.
"""

from pydantic import BaseModel, ConfigDict, Field


class GPT2Size(BaseModel):
    """Shape of a GPT-2 built from scratch (the base-model stage's config extends it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_layer: int = Field(4, ge=1, description="Transformer blocks.")
    n_head: int = Field(4, ge=1, description="Attention heads per block; must divide n_embd.")
    n_embd: int = Field(
        128,
        ge=1,
        description="Hidden size: width of the residual stream (about 0.9M parameters at 4 x 128).",
    )
    n_positions: int = Field(
        256,
        ge=16,
        description="Context length in tokens: the longest prompt + response (with room for a few-shot prefix).",
    )
