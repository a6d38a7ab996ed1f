"""A `champion` alias moved or deleted outside instructflow (MLflow's UI or client): the
versions' tags, cards and the registered model's description catch up, on a real (SQLite)
MLflow registry."""

import pytest
from mlflow import MlflowClient

from instructflow.tasks.model_card import OUTSIDE
from instructflow.tasks.registry_lookup import make_champion, reconcile_champion

NAME = "policy-moved-by-hand"


@pytest.fixture
def client(tmp_path) -> MlflowClient:
    """v1 made champion by the gate, then v2 and v3 registered."""
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_registered_model(NAME)
    for version in ("1", "2", "3"):
        client.create_model_version(NAME, source=(tmp_path / "model").as_uri())
        client.update_model_version(NAME, version, description=f"# card of v{version}\n")
    assert make_champion(client, NAME, "1", "gate")
    return client


def tags_of(client, version: str) -> dict:
    return dict(client.get_model_version(NAME, version).tags)


def test_an_alias_moved_in_mlflows_ui_is_recorded_on_both_versions(client):
    # given a person moving `champion` from v1 to v2 in MLflow's UI
    client.set_registered_model_alias(NAME, "champion", "2")
    # when instructflow next looks
    said = reconcile_champion(client, NAME)
    # then v2 reads as champion, set outside instructflow after v1, dated when found
    assert said == (
        f"{NAME}: `champion` is v2, not v1 ({OUTSIDE}); its versions' tags and cards now say so"
    )
    v2 = client.get_model_version(NAME, "2")
    assert (v2.tags["promoted_by"], v2.tags["previous_champion"]) == (OUTSIDE, "1")
    assert v2.tags["promoted_at"].endswith(" UTC or earlier")
    assert "**champion now**" in v2.description and "MLflow's UI or client" in v2.description
    assert v2.description.startswith("# card of v2\n")
    # and v1 no longer does
    v1 = client.get_model_version(NAME, "1")
    assert "promoted_by" not in v1.tags and v1.tags["replaced_by"] == "2"
    assert "**not champion**" in v1.description and "**champion now**" not in v1.description
    assert f"replaced by v2 ({OUTSIDE})" in v1.tags["promotion_history"]
    # and the registered model's description names v2 and how it got there
    description = client.get_registered_model(NAME).description
    assert "**Champion: v2**" in description and "set outside instructflow" in description
    # and a second look finds nothing to mend and writes nothing
    before = {v: tags_of(client, v) for v in ("1", "2", "3")}
    assert reconcile_champion(client, NAME) is None
    assert {v: tags_of(client, v) for v in ("1", "2", "3")} == before


def test_an_alias_deleted_by_hand_leaves_no_version_saying_it_is_champion(client):
    client.delete_registered_model_alias(NAME, "champion")
    said = reconcile_champion(client, NAME)
    assert said.startswith(f"{NAME}: `champion` is no version, not v1")
    v1 = tags_of(client, "1")
    assert "promoted_by" not in v1 and v1["replaced_by"] == "none"


def test_a_registry_that_agrees_is_left_alone(client):
    before = {v: tags_of(client, v) for v in ("1", "2", "3")}
    assert reconcile_champion(client, NAME) is None
    assert {v: tags_of(client, v) for v in ("1", "2", "3")} == before


def test_a_promotion_after_a_move_by_hand_leaves_one_version_saying_it_is_champion(client):
    # given champion moved by hand from v1 to v2, when v3 is promoted by instructflow
    client.set_registered_model_alias(NAME, "champion", "2")
    assert make_champion(client, NAME, "3", "manual", promotion_reason="better on x")
    # then only v3 holds a champion's tags, and it replaced v2 (where the alias was)
    promoted = [v for v in ("1", "2", "3") if "promoted_by" in tags_of(client, v)]
    assert promoted == ["3"]
    assert tags_of(client, "3")["previous_champion"] == "2"
    assert tags_of(client, "1")["replaced_by"] == "2"
    history = tags_of(client, "2")["promotion_history"]
    assert f"champion ({OUTSIDE}, after v1)" in history and "replaced by v3 (manual)" in history


@pytest.mark.parametrize("writes_done", [0, 4], ids=["after-the-alias", "after-the-new-champion"])
def test_a_move_killed_part_way_is_credited_to_who_made_it_not_outside(client, writes_done):
    # given a gate moving `champion` from v1 to v2, stopped (no handler runs) once the alias
    # has moved and `writes_done` of the versions' tag writes are done
    real, done = client.set_model_version_tag, []

    def stopped(*args):
        if len(done) == writes_done:
            raise KeyboardInterrupt
        done.append(args)
        real(*args)

    client.set_model_version_tag = stopped
    with pytest.raises(KeyboardInterrupt):
        make_champion(client, NAME, "2", "gate")
    client.set_model_version_tag = real
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "2"
    # when instructflow next looks
    said = reconcile_champion(client, NAME)
    # then the move is finished in the gate's name, not set down to someone outside
    assert said is not None and OUTSIDE not in said and "v2 (gate)" in said
    v2, v1 = tags_of(client, "2"), tags_of(client, "1")
    assert (v2["promoted_by"], v2["previous_champion"]) == ("gate", "1")
    assert "promoted_by" not in v1 and v1["replaced_by"] == "2"
    assert OUTSIDE not in v1["promotion_history"] + v2["promotion_history"]
    assert v2["promotion_history"].count("champion (gate, after v1)") == 1
    assert "**champion now**" in client.get_model_version(NAME, "2").description
    # and a second look finds nothing to mend
    assert reconcile_champion(client, NAME) is None


def test_an_unset_killed_part_way_is_credited_to_who_made_it(client):
    from instructflow.tasks.registry_lookup import unset_champion

    # given `champion` unset by people's rankings, stopped once the alias is gone
    real = client.set_model_version_tag
    client.set_model_version_tag = lambda *_a: (_ for _ in ()).throw(KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        unset_champion(client, NAME, "human")
    client.set_model_version_tag = real
    # then the next look finishes it in their name: v1 replaced by none, not outside
    said = reconcile_champion(client, NAME)
    assert said is not None and OUTSIDE not in said and "no version (human)" in said
    v1 = tags_of(client, "1")
    assert "promoted_by" not in v1 and v1["replaced_by"] == "none"
    assert v1["promotion_history"].endswith("champion unset (human)")
