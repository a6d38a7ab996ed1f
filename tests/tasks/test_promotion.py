"""record_approval: a person's answer to a passed gate, on a real (SQLite) MLflow registry."""

import pytest
from mlflow import MlflowClient

from instructflow.tasks.model_card import describe_registered_model
from instructflow.tasks.promotion import record_approval
from instructflow.tasks.registry_lookup import (
    champion_version,
    make_champion,
    put_back,
    unset_champion,
)

NAME = "policy-under-review"


@pytest.fixture
def client(tmp_path) -> MlflowClient:
    """A registry with v1 champion and v2 challenger (a passed gate awaiting approval)."""
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_registered_model(NAME)
    for _ in range(2):
        client.create_model_version(NAME, source=(tmp_path / "model").as_uri())
    client.set_registered_model_alias(NAME, "champion", "1")
    client.set_registered_model_alias(NAME, "challenger", "2")
    client.update_model_version(NAME, "2", description="# card of v2\n")
    return client


def test_approval_moves_champion_and_records_who_and_why(client):
    # given a gate that judged v2 against champion v1, when a person approves
    outcome = record_approval(
        client, NAME, "2", "approved", "ana", "wins on every family", judged_against="1"
    )
    # then champion moved to v2, and who and why are on the version and its card
    assert outcome == {"moved": True, "champion": "2", "note": ""}
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "2"
    tags = client.get_model_version(NAME, "2").tags
    assert tags["approval_decision"] == "approved"
    assert tags["approval_by"] == "ana"
    assert tags["approval_reason"] == "wins on every family"
    assert tags["promoted_by"] == "approval"
    assert tags["previous_champion"] == "1"
    card = client.get_model_version(NAME, "2").description
    assert card.startswith("# card of v2\n")
    assert "## Approval" in card and "approved by ana" in card and "wins on every family" in card
    # and the registered model's status says v2 is champion now
    assert "**Champion: v2**" in client.get_registered_model(NAME).description


@pytest.mark.parametrize("decision", ["rejected", "timeout"])
def test_rejection_or_timeout_leaves_champion_and_records_it(client, decision):
    outcome = record_approval(client, NAME, "2", decision, "bo", "KL too high", judged_against="1")
    assert (outcome["moved"], outcome["champion"]) == (False, "1")
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    tags = client.get_model_version(NAME, "2").tags
    assert (tags["approval_decision"], tags["approval_by"]) == (decision, "bo")
    assert "promoted_by" not in tags
    assert f"{decision} by bo (left `champion` unchanged; champion: v1)" in (
        client.get_model_version(NAME, "2").description
    )


def test_the_cards_gate_line_no_longer_awaits_a_person_once_answered(client):
    # given v2's card written by a gate that awaited approval (a tester read "awaiting a
    # person's approval" above the card's Approval section)
    card = "# card of v2\n\n- decision: passed, awaiting a person's approval: beats v1\n"
    client.update_model_version(NAME, "2", description=card)
    record_approval(client, NAME, "2", "approved", "ana", "wins", judged_against="1")
    card = client.get_model_version(NAME, "2").description
    assert "- decision: passed, then approved (Approval): beats v1" in card
    assert "awaiting" not in card


def test_an_approval_after_the_champion_moved_promotes_nothing(client):
    # given a gate that judged v2 against champion v1, and champion moved to v3 meanwhile
    client.create_model_version(NAME, source="file:///model")
    client.set_registered_model_alias(NAME, "champion", "3")
    # when a person approves v2
    outcome = record_approval(
        client, NAME, "2", "approved", "ana", "looks good", judged_against="1"
    )
    # then v2 was never played against v3: champion stays on v3, and the version says why
    assert (outcome["moved"], outcome["champion"]) == (False, "3")
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "3"
    tags = client.get_model_version(NAME, "2").tags
    assert tags["approval_decision"] == "approved" and "promoted_by" not in tags
    assert tags["approval_note"].startswith("champion moved to v3 after the gate judged against v1")
    assert "approved by ana (left `champion` unchanged; champion: v3)" in (
        client.get_model_version(NAME, "2").description
    )


def test_approval_with_no_champion_before_makes_the_first_one(client):
    client.delete_registered_model_alias(NAME, "champion")
    outcome = record_approval(client, NAME, "2", "approved", "ana", "first", judged_against=None)
    assert outcome == {"moved": True, "champion": "2", "note": ""}
    # then there was no champion to roll back to: no `previous_champion` (not "None")
    assert "previous_champion" not in client.get_model_version(NAME, "2").tags


def test_a_promotion_drops_the_tags_of_an_earlier_one(client):
    # given v2 once promoted by hand over v1, and `champion` unset since
    assert make_champion(client, NAME, "2", "manual", promotion_reason="hotfix")
    client.delete_registered_model_alias(NAME, "champion")
    # when the gate makes it champion with no champion before
    assert make_champion(client, NAME, "2", "gate")
    # then its tags tell this promotion only: no reason or predecessor of the earlier one
    tags = client.get_model_version(NAME, "2").tags
    assert tags["promoted_by"] == "gate"
    assert "promotion_reason" not in tags and "previous_champion" not in tags


def test_approving_the_champion_again_keeps_how_it_got_there(client):
    # given v2 made champion by an override (its tags say so)
    assert make_champion(client, NAME, "2", "manual", promotion_reason="hotfix")
    # when a later gate, judging the same weights, is approved by a person
    outcome = record_approval(client, NAME, "2", "approved", "ana", "fine", judged_against="2")
    # then nothing moved, and the override's record is not rewritten as an approval
    assert (outcome["moved"], outcome["champion"]) == (False, "2")
    tags = client.get_model_version(NAME, "2").tags
    assert (tags["promoted_by"], tags["previous_champion"]) == ("manual", "1")
    assert tags["promotion_reason"] == "hotfix" and tags["approval_by"] == "ana"


def test_a_rollback_leaves_every_version_saying_whether_it_is_champion(client):
    # given v1 champion, when v2 is promoted by hand and then rolled back to v1
    assert make_champion(client, NAME, "2", "manual", promotion_reason="hotfix")
    assert make_champion(client, NAME, "1", "manual", promotion_reason="hotfix broke x")
    v1, v2 = (client.get_model_version(NAME, v) for v in ("1", "2"))
    # then v1's tags are its latest promotion, and its card says it is champion now
    assert (v1.tags["promoted_by"], v1.tags["previous_champion"]) == ("manual", "2")
    assert v1.tags["promotion_reason"] == "hotfix broke x" and "replaced_by" not in v1.tags
    assert "**champion now**" in v1.description and "hotfix broke x" in v1.description
    # and v2 holds no tag of a champion, but who replaced it, its card saying so once
    assert not {"promoted_by", "previous_champion", "promotion_reason"} & set(v2.tags)
    assert v2.tags["replaced_by"] == "1"
    assert v2.description.startswith("# card of v2\n")
    assert "**not champion**" in v2.description and "**champion now**" not in v2.description
    assert v2.description.count("## Champion\n") == 1
    # and each version's history keeps every change, the first reason included
    assert "champion (manual, after v1): hotfix" in v2.tags["promotion_history"]
    assert "replaced by v1 (manual)" in v2.tags["promotion_history"]
    assert "replaced by v2 (manual)" in v1.tags["promotion_history"]


def test_people_unsetting_the_champion_leave_no_version_saying_it_is_champion(client):
    # given v2 made champion by the gate, when people's rankings undo it with no champion before
    assert make_champion(client, NAME, "2", "gate")
    unset_champion(client, NAME, "human")
    # then there is no champion, and v2 says so in its tags and card
    assert champion_version(client, NAME) is None
    v2 = client.get_model_version(NAME, "2")
    assert "promoted_by" not in v2.tags and v2.tags["replaced_by"] == "none"
    assert "**not champion**" in v2.description and "`champion` was unset" in v2.description


def test_people_rejecting_a_gates_promotion_put_the_champion_back_saying_why(client):
    # given v1 champion with its own gate's reason, and the gate then promoting v2
    client.set_model_version_tag(NAME, "1", "gate_reason", "v1's gate: beat sft")
    assert make_champion(client, NAME, "2", "gate")
    # when people's rankings reject v2
    put_back(client, NAME, "champion v1", "2", "win rate 0.41 vs champion v1")
    describe_registered_model(client, NAME)
    # then v1 is champion again, its tags, card and the model's description saying why
    assert champion_version(client, NAME) == "1"
    v1 = client.get_model_version(NAME, "1")
    assert v1.tags["promoted_by"] == "human"
    assert v1.tags["promotion_reason"] == (
        "people's rankings rejected v2, which the gate had promoted: win rate 0.41 vs champion v1"
    )
    for text in (v1.description, client.get_registered_model(NAME).description):
        champion_line = next(
            line for line in text.splitlines() if "champion now" in line or "**Champion:" in line
        )
        assert "put back on people's rankings" in champion_line
        assert "v1's gate: beat sft" not in champion_line
    assert client.get_model_version(NAME, "2").tags["replaced_by"] == "1"


def test_people_rejecting_a_first_champion_leave_none(client):
    client.delete_registered_model_alias(NAME, "champion")
    assert make_champion(client, NAME, "2", "gate")
    put_back(client, NAME, "sft", "2", "win rate 0.41 vs sft")
    assert champion_version(client, NAME) is None
    assert client.get_model_version(NAME, "2").tags["replaced_by"] == "none"
