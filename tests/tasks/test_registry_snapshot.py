"""A registry snapshot tells a missing model from a registry it could not read."""

from types import SimpleNamespace

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

from instructflow.tasks.registry_snapshot import RegistrySnapshot


class FakeClient:
    """One registered model with v1 as champion; `down` makes reads fail as a lost server does."""

    def __init__(self):
        self.down = False
        self.deleted = []

    def get_registered_model(self, name):
        if self.down:
            raise MlflowException("API request failed: Max retries exceeded (Connection refused)")
        if name != "policy":
            raise MlflowException("not found", error_code=RESOURCE_DOES_NOT_EXIST)
        return SimpleNamespace(aliases={"champion": "1"}, description="champion v1")

    def search_model_versions(self, query):
        return [SimpleNamespace(version="1", tags={}, description="")]

    def delete_registered_model(self, name):
        self.deleted.append(name)


def test_a_model_that_does_not_exist_is_recorded_as_absent():
    snapshot = RegistrySnapshot.take(FakeClient(), ["policy", "other"])
    assert snapshot.models["policy"].exists and snapshot.models["policy"].aliases == {
        "champion": "1"
    }
    assert not snapshot.models["other"].exists


def test_a_registry_that_cannot_be_read_is_not_taken_for_an_empty_one():
    # given a server that does not answer when the snapshot is taken
    client = FakeClient()
    client.down = True
    # then taking the snapshot fails, rather than recording the model as absent
    with pytest.raises(MlflowException, match="Connection refused"):
        RegistrySnapshot.take(client, ["policy"])
    # so no restore after the server is back can delete the model with its champion
    client.down = False
    RegistrySnapshot.take(client, ["policy"]).restore(client)
    assert client.deleted == []


def test_a_restore_that_fails_too_does_not_hide_the_error_and_says_what_may_be_left(caplog):
    # given a snapshot taken while the server answered, and the server gone when a write fails
    client = FakeClient()
    snapshot = RegistrySnapshot.take(client, ["policy"])
    client.down = True
    lost = MlflowException("runs/get: Max retries exceeded")
    # when the stage puts the registry back after that error
    with caplog.at_level("WARNING", logger="instructflow"):
        snapshot.restore_after(client, lost)
    # then it does not raise over the cause, and the log says the registry may be half-written
    assert "could not put the registry back after MlflowException" in caplog.text
    assert "policy may hold a version without its card" in caplog.text
    assert "run the same command again" in caplog.text
