"""The Prefect table artifact `rlhf-policies`: the policies side by side, narrow enough
for Prefect's artifact page (a 1400 px window cut the headers of one column per measure).

It holds the figures a person comparing policies reads first: the win rate against
SFT (and the held-out judge's, where the report has it) and the gold score, each as
its mean and 95% CI in one cell, with the scale in the header. The cells are
formatted from report.json's values as report.md formats them (3 decimals). The
artifact's description says where every other measure is, and, as report.md does, when
base_fewshot's row was measured with fewer demonstrations than asked.
"""

from typing import Any

from instructflow.tasks.fewshot_shown import shortfall_text
from instructflow.tasks.report import in_pipeline_order
from instructflow.tasks.splits import held_out_group

# report.json's field -> its column's header: what it is, its scale, what the cell holds.
COLUMNS = {
    "win_rate_vs_sft": "win rate vs SFT (0-1) [95% CI]",
    "judge_win_rate_vs_sft": "judge's win rate vs SFT (0-1) [95% CI]",
    "gold_score": "gold score (0-1) [95% CI]",
}
POLICY = "policy"


def mean_and_ci(value: dict[str, Any] | float | None) -> str:
    """'0.620 [0.510, 0.730]': a report figure's mean and 95% CI; '-' where it has none."""
    if value is None:
        return "-"
    if not isinstance(value, dict):
        return f"{value:.3f}"
    text = f"{value['mean']:.3f}"
    if value.get("ci95"):
        low, high = value["ci95"]
        text += f" [{low:.3f}, {high:.3f}]"
    return text


def table_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """One row per policy: its name and its preference figures with their CIs."""
    policies = report["policies"]
    # A column no policy has a figure in (gold on a dataset, a judge not run) says nothing.
    shown = [k for k in COLUMNS if any(row.get(k) is not None for row in policies.values())]
    return [
        {POLICY: name} | {COLUMNS[k]: mean_and_ci(policies[name].get(k)) for k in shown}
        for name in in_pipeline_order(policies)  # report.md's order
    ]


def _who_judged(report: dict[str, Any]) -> str:
    if report.get("dataset"):  # no labelers on a dataset: its win rates are the judge's
        return "the held-out judge's verdicts"
    judged = any(row.get("judge_win_rate_vs_sft") for row in report["policies"].values())
    return "held-out labelers' verdicts" + (
        " (the judge's column: the held-out judge's)" if judged else ""
    )


def table_description(report: dict[str, Any]) -> str:
    """The artifact's description (Markdown): who judged, base_fewshot shown fewer
    demonstrations than asked (the report's `fewshot_shortfall`), and where the rest is."""
    # A dataset without user ids is split by prompt: its test split holds prompts, not users.
    held_out = held_out_group((report.get("dataset") or {}).get("split_rule"))
    lines = [
        f"Policies on {held_out}, each figure its mean [95% CI over prompts]. Win rates: "
        f"{_who_judged(report)} against SFT's response; 0.5 is SFT's level."
    ]
    judge = report.get("judge") or {}
    if judge and not judge.get("trustworthy", True):
        lines.append(
            "The held-out judge is not to be trusted here: report.json `judge.trust_reason`."
        )
    if shortfall := report.get("fewshot_shortfall"):  # base_fewshot's row: report.md's note
        lines.append(f"{shortfall_text(shortfall)}.")
    run_id = report["run"]["mlflow_run_id"]
    lines.append(
        "Every other measure (Likert, RM score, KL to SFT, response length, perplexity and more; "
        f"on the embedded world gold per task family): `reports/{run_id}/report.json` (`policies`), the "
        "`rlhf-report` artifact and the MLflow run's `eval/<policy>/<measure>` metrics."
    )
    return "\n\n".join(lines)
