"""The promotion gate's settings (`GateConfig`).

Pydantic only, so that the run settings (flows/params.py) validate without the
stage's libraries; `instructflow.tasks.gate` runs the stage and imports it from here.
"""

from pydantic import BaseModel, ConfigDict, Field


class GateConfig(BaseModel):
    """The promotion gate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    public_suite_margin: float = Field(
        0.02,
        ge=0,
        le=1,
        description="How much public-suite accuracy the challenger may lose against the champion.",
    )
    max_prompts: int | None = Field(
        None, ge=1, description="Head-to-head on the first N test prompts (None: all)."
    )
    auto_promote: bool = Field(
        True, description="Move `champion` when the gate passes (off: record the decision only)."
    )
    require_approval: bool = Field(
        False,
        description="When the gate passes, pause the run until a person approves or rejects "
        "the promotion on the Prefect UI's form (it shows the evidence); only Approve moves "
        "`champion` (flows/approval.py).",
    )
    approval_timeout_s: int = Field(
        3600, ge=1, description="How long a paused run waits for that answer; none is no promotion."
    )
    judge_accuracy_floor: float = Field(
        0.6,
        ge=0.0,
        le=1.0,
        description="On a dataset run the evidence is the held-out judge: below this accuracy on "
        "held-out pairs it is too weak to promote on, and the gate says so.",
    )
    win_margin: float = Field(
        0.0,
        ge=0.0,
        lt=0.5,
        description="The head-to-head win rate's 95% CI lower end must exceed 0.5 + this: the "
        "seed noise between two trainings of one configuration (tasks/gate_margin.py).",
    )
    win_margin_from: str | None = Field(
        None,
        description="A seed sweep's aggregate.json (instructflow sweep): its measured noise "
        "(gate_noise.win_margin) replaces win_margin, and the gate's evidence names the sweep.",
    )
