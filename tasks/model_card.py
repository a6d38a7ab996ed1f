"""The model card: the description of each registered policy version.

A person opening the version in the MLflow UI reads where it came from
(profile, base model, tokenizer, data), what it scored, and what the
promotion gate saw and decided.
"""

from typing import Any

LINEAGE_ROWS = [
    ("profile", "profile"),
    ("base model", "base_model"),
    ("tokenizer digest", "tokenizer_digest"),
    ("data version (DVC md5)", "dvc_data_md5"),
    ("seed", "seed"),
    ("git commit", "git_commit"),
    ("MLflow parent run", "mlflow_parent_run_id"),
    ("Prefect flow run", "prefect_flow_run_id"),
]


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _verdict(gate: dict) -> str:
    if gate.get("awaiting_approval"):
        return "passed, awaiting a person's approval"
    return "promoted" if gate["promoted"] else "not promoted"


def approval_section(
    decision: str, reviewer: str, reason: str, champion: str | None, moved: bool, note: str = ""
) -> str:
    """The card's closing section once a person has answered a passed gate."""
    effect = "moved `champion` here" if moved else "left `champion` unchanged"
    where = f"v{champion}" if champion else "none"
    lines = [
        "",
        "## Approval",
        "",
        f"- decision: {decision} by {reviewer} ({effect}; champion: {where})",
        f"- reason: {reason}",
    ]
    if note:
        lines.append(f"- note: {note}")
    return "\n".join(lines) + "\n"


HUMAN_TITLE = "People's rankings"


def with_human_verdict(card: str, gate: dict) -> str:
    """`card` with a closing section on the gate decided again on people's rankings
    (`instructflow eval import`); an earlier import's section is dropped, not repeated,
    and every other section (an approval given since, say) kept."""
    sections = card.split("\n## ")
    kept = "\n## ".join(s for s in sections if not s.startswith(HUMAN_TITLE + "\n"))
    lines = ["", f"## {HUMAN_TITLE}", "", *_gate_lines(gate, public_suite=False)]
    return kept.rstrip("\n") + "\n" + "\n".join(lines) + "\n"


JUDGE_EVIDENCE = "held-out judge"  # a dataset run's gate: no labelers, no public suite


def played(gate: dict) -> str:
    """Whom the gate's head-to-head played, judged how, on how many prompts."""
    prompts = gate.get("prompts")
    on = f"{prompts} prompts" if prompts is not None else "the evaluation's test prompts"
    return f"{gate['incumbent']} ({gate['evidence']}, {on})"


def model_card(
    name: str, version: str, lineage: dict, metrics: dict[str, float], gate: dict
) -> str:
    """Markdown for the registered version's description."""
    lines = [f"# {name} v{version}", "", "## Where it comes from", ""]
    lines += [f"- {label}: `{lineage[key]}`" for label, key in LINEAGE_ROWS if key in lineage]
    if lineage.get("prefect_flow_run_url"):
        url = lineage["prefect_flow_run_url"]
        lines.append(f"- Prefect flow run page: [{url}]({url})")
    lines += ["", "## Evaluation (test users)", ""]
    lines += [f"- {key}: {_fmt(value)}" for key, value in sorted(metrics.items())]
    lines += ["", "## Promotion gate", ""]
    # a dataset run's gate has no public suite to report
    lines += _gate_lines(gate, public_suite=gate["evidence"] != JUDGE_EVIDENCE)
    if gate.get("note"):
        lines.append(f"- note: {gate['note']}")
    return "\n".join(lines) + "\n"


def _gate_lines(gate: dict, public_suite: bool) -> list[str]:
    """Whom the gate played, the win rate, the public suite if asked, the decision."""
    lines, win = [f"- played: {played(gate)}"], gate["win_rate"]
    if win:
        lines.append(
            f"- win rate: {win['mean']:.3f} (95% CI {win['ci95'][0]:.3f}-{win['ci95'][1]:.3f})"
        )
    if public_suite:
        public = gate["public_suite"]
        lines.append(f"- public suite: {public['challenger']:.3f} vs {public['incumbent']:.3f}")
    lines.append(f"- decision: {_verdict(gate)}: {gate['reason']}")
    return lines
