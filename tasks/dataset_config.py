"""How a user's dataset is split and its too-long rows handled (`DatasetConfig`).

Pydantic only, so that the run settings (flows/params.py) validate without the
stage's libraries; `instructflow.tasks.dataset` runs the stage and imports it from here.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DatasetConfig(BaseModel):
    """How a user's dataset is split and how rows longer than the context are handled."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    valid_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="Share of users (or prompts) hashed into validation."
    )
    test_fraction: float = Field(
        0.2,
        gt=0.0,
        lt=1.0,
        description="Share of users (or prompts) hashed into test: evaluation prompts and the held-out judge's preferences.",
    )
    overlong: Literal["refuse", "drop", "truncate"] = Field(
        "refuse",
        description="A row longer than the context: refuse the dataset (naming it), drop the row, or cut the prompt's start (a row whose response alone is too long is dropped). Counts go to MLflow and the report.",
    )
