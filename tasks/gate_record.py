"""Where the gate's decision is written down: the judged version's tags (and `champion`),
the registry stage's MLflow run, the parent run, and the flow run's Prefect artifact
`promotion-gate`. The decision itself is tasks/gate.py's; registering is tasks/registry.py's.
"""

from dataclasses import replace

import mlflow
from mlflow import MlflowClient
from prefect.artifacts import create_markdown_artifact

from instructflow.tasks import registry_pending, tracking
from instructflow.tasks.gate import (
    AliasEffect,
    GateDecision,
    decision_tags,
    gate_markdown,
    gate_summary,
    rule_verdict,
)
from instructflow.tasks.model_card import describe_registered_model, describe_reward_models
from instructflow.tasks.registry_lookup import make_champion

# A passed gate whose run does not ask anyone: what a person does to promote it.
APPROVAL_NOTE = "approval required: promote by hand (instructflow promote)"


def record_decision(
    client: MlflowClient,
    name: str,
    version: str,
    decision: GateDecision,
    effect: AliasEffect,
    evidence: str,
    by: str = "gate",
    approval_asked: bool = False,
) -> GateDecision:
    """Tag the version with the gate's decision and whose verdict it is (`evidence`: a tag
    a later gate on other evidence overwrites), and make it champion if `effect` says so
    (`by`: whose verdict moved it, the gate's or people's rankings: "human").

    A passed gate awaiting approval says in its reason how to promote by hand, unless
    `approval_asked`: the running flow asks a person on Prefect's form (flows/approval.py).
    Returns the decision as tagged.
    """
    if effect.awaiting_approval and not approval_asked:
        decision = replace(decision, reason=f"{decision.reason}; {APPROVAL_NOTE}")
    for key, value in decision_tags(decision).items():
        client.set_model_version_tag(name, version, key, value)
    client.set_model_version_tag(name, version, "gate_evidence", evidence)
    if effect.promote:
        make_champion(client, name, version, by)
    return decision


def complete_and_promote(
    client: MlflowClient, written: tuple[tuple[str, str], ...], promote: bool, by: str = "gate"
) -> None:
    """End a registry stage's writes: clear the being-written mark of the (name, version)s
    in `written` (the policy's first), then move `champion` to the policy's version if
    `promote`, so `champion` never points at a half-written version, and rewrite the
    registered models' pages (where `champion` stands now; what the RMs hold, how to load)."""
    registry_pending.finish(client, written)
    (name, version), (rm_name, _) = written
    if promote:
        make_champion(client, name, version, by)
    describe_reward_models(client, rm_name, name)
    describe_registered_model(client, name)


def record_gate(
    model_name: str, versions: tuple[str, str], decision: GateDecision, gate: dict
) -> dict[str, float]:
    """The gate's figures and tags on the active (registry stage's) MLflow run, which logged
    the versions' models, and its Prefect artifact `promotion-gate`: the
    same for a run on the embedded world and one on a dataset. Returns the figures."""
    policy_version, rm_version = versions
    metrics = {
        "registry/gate_win_rate": decision.win_rate,
        "registry/gate_ci_low": decision.ci95[0],
        "registry/gate_ci_high": decision.ci95[1],
        "registry/promoted": float(gate["promoted"]),
    }
    tracking.log_metrics(metrics)  # no verdict (NaN: a dataset without one) is left out
    mlflow.set_tags(
        {
            "policy_version": policy_version,
            "reward_model_version": rm_version,
            "gate_decision": rule_verdict(decision.promote, decision.held_back),
            "gate_incumbent": decision.incumbent,
            "policy_registered": gate["registered"],
            "policy_weights_digest": gate["weights_digest"],
        }
    )
    gate_artifact(model_name, policy_version, decision, gate)
    return metrics


def gate_artifact(model_name: str, version: str, decision: GateDecision, gate: dict):
    """The flow run's Prefect artifact `promotion-gate`: the gate's decision on `version`."""
    create_markdown_artifact(
        markdown=gate_markdown(model_name, version, decision, gate),
        key="promotion-gate",
        description=gate_summary(model_name, version, gate),
    )


def republish_gate(model_name: str, result: dict) -> None:
    """The `promotion-gate` artifact of a registry stage Prefect served from its cache.

    An artifact belongs to the flow run whose task made it, and a cached task runs nothing:
    the re-run's flow run had none, while its report shows the gate block of the run before.
    """
    decision = GateDecision(**result["decision"])
    gate_artifact(model_name, result["policy_version"], decision, result["gate"])


def tag_parent_run(policy_version: str, passed: bool, held: bool = False) -> None:
    """The pipeline's parent run (the active run) names the version its gate judged."""
    verdict = rule_verdict(passed, held)
    mlflow.set_tags({"policy_version": policy_version, "gate_decision": verdict})
