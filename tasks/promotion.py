"""A person's word on `champion`, written to the registry: the answer to a passed
gate (`record_approval`) and an override (`promote_manually`).

The question is asked in the flow layer (flows/approval.py pauses the run);
this is the plain registry side: the decision, who and why become tags on
the model version and a section of its model card, and `champion` moves
only on approval, and only if it is still the version the gate judged
against: a champion that moved while the run waited was never played.
"""

from typing import Literal

from mlflow import MlflowClient

from instructflow.tasks.model_card import answered, approval_section, describe_registered_model
from instructflow.tasks.registry_config import POLICY_MODEL
from instructflow.tasks.registry_lookup import champion_version, find_version, make_champion

Decision = Literal["approved", "rejected", "timeout"]


def _str(version) -> str | None:
    return None if version is None else str(version)  # MLflow may give an int


def record_approval(
    client: MlflowClient,
    name: str,
    version: str,
    decision: Decision,
    reviewer: str,
    reason: str,
    judged_against: str | None,
) -> dict:
    """Tag `name` v`version` with the answer; on approval make it champion.

    judged_against: the champion when the gate judged (None: there was none).
    Returns {"moved": whether champion moved here, "champion": the champion now, "note"}.
    """
    previous = _str(champion_version(client, name))
    stale = decision == "approved" and previous != _str(judged_against)
    note = (
        f"champion moved to v{previous} after the gate judged against v{judged_against}: "
        "not promoted (run the gate again)"
        if stale
        else ""
    )
    tags = {"approval_decision": decision, "approval_by": reviewer, "approval_reason": reason}
    if note:
        tags["approval_note"] = note
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    moved = (
        decision == "approved" and not stale and make_champion(client, name, version, "approval")
    )
    champion = _str(champion_version(client, name))
    card = client.get_model_version(name, version).description or ""
    section = approval_section(decision, reviewer, reason, champion, moved, note)
    client.update_model_version(name, version, description=answered(card, decision) + section)
    describe_registered_model(client, name)  # where `champion` stands after the answer
    return {"moved": moved, "champion": champion, "note": note}


def promote_manually(version: str, reason: str, name: str = POLICY_MODEL) -> bool:
    """An override: make `version` champion, recording who-knows-why in its tags.

    False (and nothing written) when it is champion already: its tags keep the
    record of how it got there (the gate, people's rankings, an earlier override).
    """
    if not reason.strip():
        raise ValueError("a manual promotion needs a reason")
    client = MlflowClient()
    find_version(client, name, version)  # one line naming what is there if it is not
    if not make_champion(client, name, version, "manual", promotion_reason=reason):
        return False
    describe_registered_model(client, name)
    return True
