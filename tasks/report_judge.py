"""report.md's words on the held-out judge: the caveat above the policy table, the Held-out
judge section, and the one place its trust_reason is said.

A judge's trust_reason is long (its accuracy, a 95% interval, the floor, how many pairs a
judge at the floor needs), and a dataset run's report.md said it five times: in the gate's
reason (a dataset run's gate refuses to act on an untrusted judge, quoting it), above the
policy table, in the Held-out judge section and twice in the Dataset section. It is said
once, where a reader meets it first (`trust_reason_home`); the later places point there.
report.json is not changed: judge.trust_reason and gate.reason hold it as before.
"""

from collections.abc import Callable
from typing import Any

GATE, CAVEAT, JUDGE = "gate", "caveat", "judge"
# How a later place names the first: report.md's order is the gate, the note above the
# policy table, the Held-out judge section, then (a dataset run) the Dataset section.
SAID_IN = {
    GATE: "the Promotion gate's reason above",
    CAVEAT: "the note above the policy table",
    JUDGE: "Held-out judge, trust_reason",
}


def _gate_quotes(gate: dict[str, Any] | None, reason: str) -> bool:
    """Whether the Promotion gate section says `reason`: in its reason, or in the automatic
    decision's that people's rankings overrode."""
    gate = gate or {}
    said = [gate.get("reason"), (gate.get("automatic") or {}).get("reason")]
    return any(reason in text for text in said if text)


def _untrusted(judge: dict[str, Any]) -> bool:
    return bool(judge) and not judge.get("trustworthy", True)


def trust_reason_home(report: dict[str, Any]) -> str | None:
    """Where report.md says the judge's trust_reason (GATE, CAVEAT or JUDGE): the first of
    those places that says it at all; None without a reason to say."""
    judge = report.get("judge") or {}
    reason = judge.get("trust_reason")
    if not reason:
        return None
    if _gate_quotes(report.get("gate"), reason):
        return GATE
    if _untrusted(judge) and report.get("policies"):
        return CAVEAT
    return JUDGE


def judge_caveat(report: dict[str, Any]) -> list[str]:
    """A warning above the policy table when figures in it come from a judge not to be
    trusted: why (or where the gate said why), and how many pairs it trained on."""
    judge = report.get("judge") or {}
    if not _untrusted(judge):
        return []
    size = f"trained on {judge['training_pairs']} pairs"  # the reason names the held-out ones
    if trust_reason_home(report) == CAVEAT:
        why = f": {judge['trust_reason']} ({size})"
    else:
        why = f" ({SAID_IN[GATE]} says why; {size})"
    if report.get("dataset"):
        return [
            f"> The win rates below are the held-out judge's, which is not to be trusted "
            f"here{why}. Let people rank samples instead: `instructflow eval export latest`.",
            "",
        ]
    return [
        f"> judge_win_rate_vs_sft is the held-out judge's, which is not to be trusted here"
        f"{why}; win_rate_vs_sft (held-out labelers) is not affected.",
        "",
    ]


def _judge_field(report: dict[str, Any], key: str, value: Any, fmt: Callable) -> str:
    if key == "trust_reason" and trust_reason_home(report) != JUDGE:
        return f"- {key}: see {SAID_IN[trust_reason_home(report)]}"
    return f"- {key}: {fmt(value)}"


def judge_section(report: dict[str, Any], fmt: Callable[[Any], str]) -> list[str]:
    """The Held-out judge section: its fields, then its agreement with gold, if measured."""
    judge = report["judge"]
    lines = ["", "## Held-out judge", ""]
    lines += [
        _judge_field(report, k, v, fmt) for k, v in judge.items() if k != "agreement_with_gold"
    ]
    agreement = judge.get("agreement_with_gold")
    if agreement:
        lines += [
            "",
            "Agreement with gold (policy sample vs SFT sample, pairs gold orders):",
            "",
            "| pairs | judge | held-out labelers | n |",
            "| --- | --- | --- | --- |",
        ]
        scopes = {"all": agreement, "prompts the judge never saw": agreement["unseen_prompts"]}
        scopes |= agreement["by_policy"]
        lines += [
            f"| {name} | {fmt(a['judge'])} | {fmt(a['heldout_labelers'])} | {a['pairs']} |"
            for name, a in scopes.items()
        ]
    return lines


def verdict_said_above(report: dict[str, Any]) -> str:
    """The judge's verdict in a few words, pointing to where report.md says why (for the
    Dataset section, which comes after every other place)."""
    judge = report["judge"]
    verdict = "not to be trusted" if _untrusted(judge) else "trusted"
    home = trust_reason_home(report)
    return verdict if home is None else f"{verdict}: see {SAID_IN[home]}"
