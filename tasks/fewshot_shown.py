"""base_fewshot showing fewer demonstrations than `evaluation.fewshot_examples` asks: the
report's `fewshot_shortfall` block ({"shown", "asked", "reason"}) and its sentence.

A few-shot baseline measured with 1 demonstration is not the one measured with 3, so the
report says so beside its figures: a warning in the run's log scrolls by, and report.json
and report.md read as if every demonstration asked for had been shown. The block is left
out when base_fewshot shows all it was asked for (or is skipped: the report's `skipped`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from instructflow.tasks.evaluation_config import EvalConfig

SHORTFALL = (
    "base_fewshot shows {shown} of evaluation.fewshot_examples = {asked} demonstrations: {reason}"
)
# The embedded world's prefix (tasks/evaluation.py fewshot_rows): one per family, short answers.
WORLD_FEW = (
    "it shows one per task family whose training demonstrations have an answer of at most"
    " {words} words, and {families}"
)


def shortfall(shown: int, asked: int, reason: str) -> dict:
    """The report's block: how many demonstrations base_fewshot shows, of how many, and why."""
    return {"shown": shown, "asked": asked, "reason": reason}


def shortfall_text(block: dict) -> str:
    """The block as one sentence (the run's log warning, report.md's line)."""
    return SHORTFALL.format(**block)


def mlflow_tags(block: dict | None) -> dict[str, str]:
    """The parent run's tag `fewshot_shortfall` ("9 of 10"): a person filtering runs in MLflow's
    UI sees which base_fewshot figures were measured with fewer demonstrations; no tag without."""
    return {"fewshot_shortfall": f"{block['shown']} of {block['asked']}"} if block else {}


def world_prefix(profile_dir: Path, cfg: EvalConfig) -> tuple[str, dict | None]:
    """The embedded world's few-shot prefix, and its block when the prefix holds fewer than
    `cfg.fewshot_examples` demonstrations (its preflight refuses a prefix the context cannot
    hold, so only the families can run short)."""
    # the evaluation stage's module imports torch: report.md's writers need only the text
    from instructflow.tasks.evaluation import FEWSHOT_MAX_WORDS, fewshot_rows, fewshot_text

    asked = cfg.fewshot_examples
    rows = fewshot_rows(profile_dir, asked)
    shown = len(rows)
    if shown >= asked:
        return fewshot_text(rows), None
    families = {0: "no family has one", 1: "only 1 family has one"}.get(
        shown, f"only {shown} families have one"
    )
    reason = WORLD_FEW.format(words=FEWSHOT_MAX_WORDS, families=families)
    return fewshot_text(rows), shortfall(shown, asked, reason)
