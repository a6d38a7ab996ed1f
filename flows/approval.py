"""A person approves a promotion: the flow pauses on Prefect's form, with the gate's evidence on it.

When `gate.require_approval` is on and the automatic gate passes, the flow
run pauses with `pause_flow_run(wait_for_input=...)`. The Prefect UI shows
the evidence (as the form's Markdown description) and a form asking Approve
or Reject, who decides and why. Approve moves `champion`; Reject, or no
answer before the timeout, leaves it where it was. Either way the decision,
who and why are tags on the model version (instructflow.tasks.promotion.record_approval).
"""

from dataclasses import asdict, dataclass
from typing import Any, Literal

import mlflow
from mlflow import MlflowClient
from prefect import get_client, get_run_logger
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.states import Running
from pydantic import Field

from instructflow.tasks.concurrency import registry_slot
from instructflow.tasks.gate import GateConfig, short_answers
from instructflow.tasks.model_card import JUDGE_EVIDENCE
from instructflow.tasks.promotion import record_approval
from instructflow.tasks.stage_notes import MEASURES


class PromotionApproval(RunInput):
    """What the reviewer answers on the paused run's form."""

    decision: Literal["Approve", "Reject"] = Field(
        description="Approve moves `champion` to this version; Reject leaves it where it is."
    )
    # pattern: not blank. min_length let whitespace through, stripped to '' in the tags;
    # a pattern is in the form's JSON schema, which Prefect checks a resume's input against.
    reviewer: str = Field(min_length=1, pattern=r"\S", description="Who decides (your name).")
    reason: str = Field(
        min_length=1, pattern=r"\S", description="Why: it goes into the model version's tags."
    )


@dataclass(frozen=True)
class Approval:
    decision: Literal["approved", "rejected", "timeout"]
    reviewer: str
    reason: str

    @property
    def approved(self) -> bool:
        return self.decision == "approved"


def _ci(value: dict | None) -> str:
    if not value:
        return "-"
    text = f"{value['mean']:.3f}"
    if value.get("ci95"):
        low, high = value["ci95"]
        text += f" (95% CI {low:.3f}-{high:.3f})"
    return text


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


def evidence_markdown(
    model: str, gate: dict, candidate: str, policies: dict[str, dict], links: list[str]
) -> str:
    """The evidence a reviewer reads before deciding, as Markdown for Prefect's form.

    `gate` is the registry stage's gate block (the report's `gate`), `policies`
    the report's evaluation rows.
    """
    row, sft = policies[candidate], policies.get("sft", {})
    win, rival = gate["win_rate"], gate["incumbent"]
    public = gate.get("public_suite") or {}  # a dataset run's gate has none
    verdict = "passed" if gate["promote"] else "did not pass"
    # A dataset run plays SFT on the evaluation's prompts, judged by its held-out judge.
    played = f"head to head, {gate['prompts']} prompts" if gate["prompts"] else "evaluation"
    if gate.get("evidence") == JUDGE_EVIDENCE:
        played += f", {JUDGE_EVIDENCE}"
    lines = [
        f"## Promote {model} v{gate['policy_version']} ({candidate}) to `champion`?",
        "",
        f"The automatic gate {verdict}: {gate['reason']}.",
        "",
        "| evidence | challenger | reference |",
        "| --- | --- | --- |",
        f"| win rate vs {rival} ({played}) | {_ci(win)} | 0.5 |",
    ]
    if rival != "sft" or gate["prompts"]:  # else the same figure as the row above
        lines.append(f"| win rate vs SFT (evaluation) | {_ci(row.get('win_rate_vs_sft'))} | 0.5 |")
    if public.get("challenger") is not None:  # older dataset runs wrote null figures
        lines.append(
            f"| public-suite accuracy | {_num(public['challenger'])} | "
            f"{_num(public['incumbent'])} ({rival}) |"
        )
    lines.append(f"| KL to SFT | {_num(row.get('kl_to_sft'))} | 0 |")
    length = (row.get("response_length"), sft.get("response_length"))
    lines.append(f"| answer length (words) | {_num(length[0])} | {_num(length[1])} (SFT) |")
    if row.get("gold_score") is not None:  # nor a gold score
        lines.append(
            f"| gold score | {_ci(row.get('gold_score'))} | {_ci(sft.get('gold_score'))} (SFT) |"
        )
    # what the report and model card say of it: a sampled estimate, which can read just below 0
    lines += ["", f"KL to SFT: {MEASURES['kl_to_sft']}."]
    families = sorted(row.get("per_family", {}))
    if families:
        lines += ["", "| task family | challenger gold | SFT gold |", "| --- | --- | --- |"]
        for family in families:
            mine = row["per_family"][family].get("gold_score")
            theirs = sft.get("per_family", {}).get(family, {}).get("gold_score")
            lines.append(f"| {family} | {_num(mine)} | {_num(theirs)} |")
    if links:
        lines += ["", "MLflow runs (this pipeline, the gate):", ""]
        lines += [f"- [{url}]({url})" for url in links]
    if warning := short_answers(policies, candidate):
        lines += ["", f"**Warning:** {warning}."]
    lines += ["", "Approve moves `champion`; Reject or no answer leaves it where it is."]
    return "\n".join(lines) + "\n"


def _running_again() -> None:
    """Put this flow run back in Running after a pause nobody answered.

    Prefect leaves a timed-out pause Paused and later refuses the run's Completed
    ("The flow was completed and never resumed"): the run went on to its report, yet
    ended Failed, and `instructflow run` raised on it. No answer is a decision here
    (no promotion), so the run carries on; force: the server would refuse the move.
    """
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(FlowRunContext.get().flow_run.id, Running(), force=True)


def request_approval(evidence: str, timeout_s: int, poll_s: int = 5) -> Approval:
    """Pause this flow run until a person answers the form, or the timeout passes."""
    logger = get_run_logger()
    form = PromotionApproval.with_initial_data(description=evidence)
    try:
        answer = pause_flow_run(wait_for_input=form, timeout=timeout_s, poll_interval=poll_s)
    except FlowPauseTimeout:
        logger.warning("no approval within %s s: champion stays where it is", timeout_s)
        _running_again()
        return Approval("timeout", "nobody", f"no answer within {timeout_s} s")
    decision = "approved" if answer.decision == "Approve" else "rejected"
    logger.info("promotion %s by %s: %s", decision, answer.reviewer, answer.reason)
    return Approval(decision, answer.reviewer.strip(), answer.reason.strip())


def review(
    model: str,
    gate: dict,
    candidate: str,
    policies: dict[str, dict],
    links: list[str],
    timeout_s: int,
    client: MlflowClient | None = None,
) -> dict:
    """Ask a person about `model` v`gate["policy_version"]`, write the answer to the registry.

    Returns the gate block updated with the answer (`approval`, `promoted`, `champion`).
    The version is promoted only if `champion` is still the one the gate judged
    against (gate["champion"]): a champion moved meanwhile was never played.
    """
    version = gate["policy_version"]
    answer = request_approval(evidence_markdown(model, gate, candidate, policies, links), timeout_s)
    with registry_slot():  # one registry writer at a time, as for the gate
        outcome = record_approval(
            client or MlflowClient(),
            model,
            version,
            answer.decision,
            answer.reviewer,
            answer.reason,
            judged_against=gate["champion"],
        )
    if mlflow.active_run():
        mlflow.set_tag("approval_decision", answer.decision)
    return gate | {
        "approval": asdict(answer) | outcome,
        "promoted": outcome["moved"],
        "awaiting_approval": False,
        "champion": outcome["champion"],
    }


def after_gate(
    cfg: GateConfig,
    model: str,
    gate: dict,
    candidate: str,
    policies: dict[str, dict],
    links: list[str],
) -> dict:
    """The report's gate block: as the registry stage left it, or after a person's answer."""
    if not (cfg.require_approval and gate["promote"]):
        return gate
    return review(model, gate, candidate, policies, links, cfg.approval_timeout_s)
