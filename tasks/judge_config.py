"""The held-out judge's settings (`JudgeConfig`).

Pydantic only, so that the run settings (flows/params.py) validate without the
stage's libraries; `instructflow.tasks.judge` runs the stage and imports it from here.
"""

from pydantic import BaseModel, ConfigDict, Field


class JudgeConfig(BaseModel):
    """The held-out judge: how its data are split and how it is trained."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    test_share: float = Field(
        0.3,
        gt=0.0,
        lt=1.0,
        description="Share of held-out users (prompts where rows have no user) whose preferences only test the judge.",
    )
    max_train_pairs: int | None = Field(
        None,
        ge=1,
        description="Train on at most this many ranked pairs (None: all). A small number makes a deliberately weak judge.",
    )
    epochs: int = Field(2, ge=1, description="Passes over the judge's training rankings.")
    lr: float = Field(5e-4, gt=0, description="Peak learning rate.")
    batch_size: int = Field(16, ge=1, description="Rankings per step.")
