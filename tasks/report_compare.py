"""Two reports side by side (`instructflow compare A B`): where and from what each was made,
who judged them, how many demonstrations base_fewshot was shown, each shared policy's
figures with their 95% CIs, and each run's gate.

A difference of win rates is a change of policy only when one judge gave both.
On the embedded world `win_rate_vs_sft` is the held-out labelers' (fixed by the
profile and the data) and `judge_win_rate_vs_sft` the held-out judge's; on a
dataset `win_rate_vs_sft` is the run's held-out judge's, a reward model trained on
that run's test split. A judge is the same in both reports only when its stage
key is (same data, settings, seed and code); otherwise the comparison says so.
"""

from typing import Any

from instructflow.tasks.fewshot_shown import shortfall_text
from instructflow.tasks.provenance import compare, describe_comparison, input_differences

FIGURES = (
    "gold_score",
    "win_rate_vs_sft",
    "judge_win_rate_vs_sft",
    "public_suite_accuracy",
    "kl_to_sft",
    "response_length",
)
HELD_OUT_JUDGE = "the run's held-out judge (a reward model trained on its test split)"


def judges(report: dict[str, Any]) -> dict[str, tuple[str, tuple | None]]:
    """metric -> (who judged it, what identifies that judge; None when the report does not say)."""
    run = report.get("run", {})
    key = run.get("stage_keys", {}).get("judge")
    judge = ("judge", key) if key else None
    if report.get("dataset"):
        return {"win_rate_vs_sft": (HELD_OUT_JUDGE, judge)}
    labelers = ("labelers", run.get("profile"), run.get("dvc_data_md5"))
    return {
        "win_rate_vs_sft": ("the embedded world's held-out labelers", labelers),
        "judge_win_rate_vs_sft": (HELD_OUT_JUDGE, judge),
    }


def data_differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, list[str]]:
    """The tables of two dataset runs that differ, by their md5 (`data preferences.jsonl`):
    data outside DVC has no version in the `run` block to tell them apart."""
    tables_a = (a.get("dataset") or {}).get("tables", {})
    tables_b = (b.get("dataset") or {}).get("tables", {})
    differences = {}
    for name in [*tables_a, *(n for n in tables_b if n not in tables_a)]:
        one, other = tables_a.get(name, {}), tables_b.get(name, {})
        if one.get("md5") != other.get("md5"):
            file = one.get("file") or other.get("file") or name
            shown = [f"md5 {t['md5'][:8]}" if t.get("md5") else "none" for t in (one, other)]
            differences[f"data {file}"] = shown
    return differences


def judge_lines(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """A warning for each win rate that the two reports got from different judges."""
    lines = []
    judges_a, judges_b = judges(a), judges(b)
    for metric in FIGURES:
        if metric not in judges_a or metric not in judges_b:
            continue
        (who_a, id_a), (who_b, id_b) = judges_a[metric], judges_b[metric]
        if id_a is not None and id_a == id_b:
            continue
        if id_a is None or id_b is None:  # a report from before judges were keyed
            lines.append(f"- {metric}: the reports do not say whether one judge gave both")
            continue
        same_kind = "another instance of " if who_a == who_b else ""
        lines.append(
            f"- {metric}: NOT THE SAME JUDGE (A: {who_a}; B: {same_kind}{who_b}), so B - A "
            "mixes a change of policy with a change of judge" + _why_another_judge(a, b, id_a, id_b)
        )
    return lines


def _why_another_judge(a: dict[str, Any], b: dict[str, Any], id_a: tuple, id_b: tuple) -> str:
    """Why two runs' held-out judges differ when it is their SFT models: each judge is
    fine-tuned from its run's SFT checkpoint, so a change only SFT saw (its settings, the
    process count, precision) makes another judge, which "another instance" left unsaid."""
    if id_a[0] != "judge" or id_b[0] != "judge":
        return ""
    sft_a, sft_b = (r.get("run", {}).get("stage_keys", {}).get("sft") for r in (a, b))
    said = f" (judge keys {id_a[1]} vs {id_b[1]})"
    if sft_a and sft_b and sft_a != sft_b:
        said += (
            f"; each run's judge is fine-tuned from that run's SFT model, and the SFT models"
            f" differ ({sft_a} vs {sft_b})"
        )
    return said


def fewshot_lines(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Each report's `fewshot_shortfall` in one line, and whether base_fewshot's rows compare
    a prefix of one length with another (a baseline shown 9 demonstrations is not the one
    shown 10)."""
    blocks = {side: r.get("fewshot_shortfall") for side, r in (("A", a), ("B", b))}
    lines = [f"- {side}: {shortfall_text(block)}" for side, block in blocks.items() if block]
    shown = {
        side: (block["shown"], block["asked"]) if block else None for side, block in blocks.items()
    }
    in_both = all("base_fewshot" in r.get("policies", {}) for r in (a, b))
    if in_both and shown["A"] != shown["B"]:
        said = [
            f"{side} {pair[0]} of {pair[1]}" if pair else f"{side} all it was asked for"
            for side, pair in shown.items()
        ]
        lines.append(
            f"- base_fewshot: NOT LIKE FOR LIKE (demonstrations shown: {'; '.join(said)}), so"
            " its rows' B - A mixes a change of policy with a change of prompt"
        )
    return lines


def _value(figure: Any) -> tuple[float | None, str]:
    """(the figure's mean, the figure as text with its 95% CI when it has one)."""
    if isinstance(figure, dict):
        mean, ci = figure.get("mean"), figure.get("ci95")
        if mean is None:
            return None, ""
        return mean, f"{mean:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{mean:.3f}"
    if isinstance(figure, int | float):
        return figure, f"{figure:.3f}"
    return None, ""


def policy_rows(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The figures of each policy both reports have, as Markdown table rows."""
    rows = ["| policy | metric | A | B | B - A |", "| --- | --- | --- | --- | --- |"]
    policies_b = b.get("policies", {})
    for policy, figures_a in a.get("policies", {}).items():
        if policy not in policies_b:
            continue
        for metric in FIGURES:
            (left, text_a), (right, text_b) = (
                _value(f.get(metric)) for f in (figures_a, policies_b[policy])
            )
            if left is not None and right is not None:
                rows.append(f"| {policy} | {metric} | {text_a} | {text_b} | {right - left:+.3f} |")
    return rows


def _decision(gate: dict[str, Any]) -> str:
    if gate.get("awaiting_approval"):
        return "passed, awaiting approval"
    verdict = "promoted" if gate.get("promoted") else "not promoted"
    return f"{verdict}: {gate['reason']}" if gate.get("reason") else verdict


def gate_rows(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Each run's promotion gate: whom its candidate played, on what evidence, and the decision."""
    gates = [r.get("gate") or {} for r in (a, b)]
    if not any(gates):
        return []
    fields = [
        ("registered model", lambda g: g.get("model_name")),
        ("candidate", lambda g: g.get("candidate")),
        ("version", lambda g: g.get("policy_version")),
        ("played", lambda g: g.get("incumbent")),
        ("evidence", lambda g: g.get("evidence")),
        ("win rate", lambda g: _value(g.get("win_rate"))[1] or None),
        ("decision", lambda g: _decision(g) if g else None),
        ("champion after", lambda g: g.get("champion")),
    ]
    rows = ["| gate | A | B |", "| --- | --- | --- |"]
    for name, read in fields:
        left, right = (read(g) for g in gates)
        if left is not None or right is not None:
            rows.append(
                f"| {name} | {'-' if left is None else left} | {'-' if right is None else right} |"
            )
    return rows


def report_comparison(a: dict[str, Any], b: dict[str, Any]) -> str:
    """Two report.json contents side by side, as Markdown a person reads before trusting a
    difference: where each was made and from what, who judged, the figures, the gates."""
    missing = [name for name, r in (("A", a), ("B", b)) if "provenance" not in r]
    if missing:
        head = (
            f"Report {' and '.join(missing)} records no provenance: where it was made is unknown."
        )
    else:
        result = compare(a["provenance"], b["provenance"])
        result["differences"] |= input_differences(a.get("run", {}), b.get("run", {}))
        result["differences"] |= data_differences(a, b)
        head = describe_comparison(result)
    lines = [head, *judge_lines(a, b), *fewshot_lines(a, b), "", *policy_rows(a, b)]
    only = [
        f"Only in {side}: {', '.join(names)}"
        for side, names in (
            ("A", [p for p in a.get("policies", {}) if p not in b.get("policies", {})]),
            ("B", [p for p in b.get("policies", {}) if p not in a.get("policies", {})]),
        )
        if names
    ]
    gates = gate_rows(a, b)
    return "\n".join(lines + ([""] + only if only else []) + ([""] + gates if gates else []))
