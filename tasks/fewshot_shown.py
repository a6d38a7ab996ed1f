"""base_fewshot showing fewer demonstrations than `evaluation.fewshot_examples` asks: the
report's `fewshot_shortfall` block ({"shown", "asked", "reason"}) and its sentence.

A few-shot baseline measured with 1 demonstration is not the one measured with 3, so the
report says so beside its figures: a warning in the run's log scrolls by, and report.json
and report.md read as if every demonstration asked for had been shown. The block is left
out when base_fewshot shows all it was asked for (or is skipped: the report's `skipped`).
"""

from __future__ import annotations

SHORTFALL = (
    "base_fewshot shows {shown} of evaluation.fewshot_examples = {asked} demonstrations: {reason}"
)


def shortfall(shown: int, asked: int, reason: str) -> dict:
    """The report's block: how many demonstrations base_fewshot shows, of how many, and why."""
    return {"shown": shown, "asked": asked, "reason": reason}


def shortfall_text(block: dict) -> str:
    """The block as one sentence (the run's log warning, report.md's line)."""
    return SHORTFALL.format(**block)
