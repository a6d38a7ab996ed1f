"""The model card's Evaluation section: what the version scored on held-out users.

Apart from tasks/model_card.py, which holds the rest of the card (lineage, gate,
champion status), so that each stays short.
"""

from typing import Any

from instructflow.tasks.splits import held_out_group
from instructflow.tasks.stage_notes import MEASURES


def fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


# Which figure is whose (a dataset run has no labelers: its win rate is the judge's alone).
JUDGED_BY = (
    "`win_rate_vs_sft` and `likert` come from the held-out labelers, `judge_win_rate_vs_sft` "
    "from the run's held-out judge, a second reward model trained only on held-out "
    "labelers' rankings."
)
UNKNOWN_TRUST = (
    "It may be untrusted: the run's report.md says whether to trust it (section Held-out judge)."
)


def as_sentences(reason: str) -> str:
    """A judge's trust_reason (clauses joined by "; ", as report.json keeps it) as sentences."""
    clauses = [clause.strip() for clause in reason.split("; ") if clause.strip()]
    return " ".join(clause[0].upper() + clause[1:].rstrip(".") + "." for clause in clauses)


def judged_by(judge: dict | None) -> str:
    """Which figure is whose, then whether the run trusts its judge and why (`judge`: the
    report's judge block, or its `trustworthy` and `trust_reason`), in plain sentences (one
    run-on line chained with colons read badly); without a verdict, where to find it."""
    if judge is None:
        return f"{JUDGED_BY} {UNKNOWN_TRUST}"
    trusted = judge["trustworthy"]
    verdict = "The run trusts this judge." if trusted else "This judge is not to be trusted here."
    return f"{JUDGED_BY} {verdict} {as_sentences(judge['trust_reason'])}"


def in_reading_order(metrics: dict) -> list[str]:
    """The figures' names as a reader needs them: the known measures in MEASURES' order
    (the win rate against SFT first; the alphabet put `admit_unknown_rate` there), then
    any other alphabetically."""
    known = [key for key in MEASURES if key in metrics]
    return known + sorted(key for key in metrics if key not in MEASURES)


def measure_line(key: str, value: Any) -> str:
    """A figure of the card, with its unit or scale where it is a known measure."""
    unit = MEASURES.get(key)
    return f"- {key}: {fmt(value)}" + (f" ({unit})" if unit else "")


def evaluation_lines(
    lineage: dict, metrics: dict, judge: dict | None, say_who_judged: bool
) -> list[str]:
    """The Evaluation section: on which held-out group, who judged (`say_who_judged`:
    a run with labelers beside its judge), then each figure with its unit."""
    lines = ["", f"## Evaluation ({held_out_group(lineage.get('split_rule'))})", ""]
    if "judge_win_rate_vs_sft" in metrics and say_who_judged:
        lines += [judged_by(judge), ""]
    return lines + [measure_line(key, metrics[key]) for key in in_reading_order(metrics)]
