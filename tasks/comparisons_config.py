"""How comparison data is collected (`ComparisonsConfig`).

Pydantic only, so that the run settings (flows/params.py) validate without the
stage's libraries; `instructflow.tasks.comparisons` runs the stage and imports it from here.
"""

from pydantic import BaseModel, ConfigDict, Field


class ComparisonsConfig(BaseModel):
    """How comparison data is collected."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    k: int = Field(
        6,
        ge=4,
        le=9,
        description="Responses sampled and ranked per prompt (InstructGPT: 4 to 9; 6 gives 15 pairs each).",
    )
    temperature: float = Field(1.0, gt=0, description="Sampling temperature for the K responses.")
    max_new_tokens: int = Field(24, ge=1, description="Longest response sampled.")
    batch_size: int = Field(256, ge=1, description="Sequences per generation batch.")
    overlap_fraction: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Share of training prompts ranked by a second labeler (agreement).",
    )
    heldout_prompts: int = Field(
        300, ge=1, description="Test users' prompts ranked by held-out labelers to evaluate the RM."
    )
    human_comparisons: str | None = Field(
        None, description="JSONL of human comparisons to use instead of simulated labelers."
    )
