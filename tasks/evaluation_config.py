"""How policies are evaluated (`EvalConfig`).

Pydantic only, so that the run settings (flows/params.py) validate without the
stage's libraries; `instructflow.tasks.evaluation` runs the stage and imports it from here.
"""

from pydantic import BaseModel, ConfigDict, Field


class EvalConfig(BaseModel):
    """How policies are evaluated (the same setting for all of them)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float = Field(
        1.0, gt=0, description="Sampling temperature for every policy's responses."
    )
    max_new_tokens: int = Field(24, ge=1, description="Longest response.")
    batch_size: int = Field(128, ge=1, description="Prompts per generation batch.")
    fewshot_examples: int = Field(
        3, ge=0, description="Demonstrations from training users in base_fewshot's prefix."
    )
    max_prompts: int | None = Field(
        None, ge=1, description="Evaluate on the first N test prompts only (None: all)."
    )
    samples_per_prompt: int = Field(
        3,
        ge=1,
        description="Responses sampled and judged per test prompt; CIs resample prompts, so more samples narrow them only by the sampling and labeler noise.",
    )
