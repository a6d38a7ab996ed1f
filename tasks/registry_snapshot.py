"""What the registry held before a run wrote to it, and how to put it back.

The registry stage writes several things (two model versions, aliases, tags,
a description). MLflow has no transaction across them, so the stage takes a
snapshot first and, if any write fails, restores it: versions created since
are deleted, aliases point where they pointed, the registered model's own
description (its champion status, tasks/model_card.py) is what it was, a
registered model that did not exist is removed. A version that existed before
is written to when it already held the candidate's weights (the gate's tags,
its card: tasks/registry_weights.py), so its tags and description are put back too.
"""

import logging
from dataclasses import dataclass, field

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from prefect import get_run_logger
from prefect.exceptions import MissingContextError


@dataclass
class RegisteredModelState:
    exists: bool
    versions: set[str] = field(default_factory=set)
    aliases: dict[str, str] = field(default_factory=dict)
    description: str = ""
    # version -> (its tags, its description)
    records: dict[str, tuple[dict[str, str], str]] = field(default_factory=dict)


@dataclass
class RegistrySnapshot:
    models: dict[str, RegisteredModelState]

    @classmethod
    def take(cls, client: MlflowClient, names: list[str]) -> "RegistrySnapshot":
        return cls({name: _state(client, name) for name in names})

    def restore_after(self, client: MlflowClient, error: BaseException) -> None:
        """Restore after `error` made a write fail. A restore that fails too (the server
        that was lost is still gone) must not hide `error`, the cause the user needs;
        it says what the registry may hold half-written instead."""
        try:
            self.restore(client)
        except Exception as failed:  # noqa: BLE001  (the caller re-raises `error`)
            _logger().warning(
                "could not put the registry back after %s (%s): %s may hold a version "
                "without its card or gate tags, or a moved alias; run the same command "
                "again to complete it",
                type(error).__name__,
                str(failed).splitlines()[0][:200],
                ", ".join(self.models),
            )

    def restore(self, client: MlflowClient) -> None:
        """Make every model's versions, aliases and description what they were when the
        snapshot was taken."""
        for name, before in self.models.items():
            now = _state(client, name)
            if not now.exists:
                continue
            if not before.exists:
                client.delete_registered_model(name)
                continue
            for version in sorted(now.versions - before.versions, key=int):
                client.delete_model_version(name, version)
            for alias in now.aliases.keys() - before.aliases.keys():
                client.delete_registered_model_alias(name, alias)
            for alias, version in before.aliases.items():
                if now.aliases.get(alias) != version:
                    client.set_registered_model_alias(name, alias, version)
            if now.description != before.description:
                client.update_registered_model(name, description=before.description)
            for version in sorted(before.versions & now.versions, key=int):
                _restore_version(
                    client, name, version, before.records[version], now.records[version]
                )


def _logger():
    """The run's logger (Prefect's UI shows it), or this package's outside a run."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("instructflow")


def _restore_version(client: MlflowClient, name: str, version: str, before, now) -> None:
    """Put a version's (tags, description) back to `before` where they are `now` otherwise."""
    (tags, description), (tags_now, description_now) = before, now
    for key in tags_now.keys() - tags.keys():
        client.delete_model_version_tag(name, version, key)
    for key, value in tags.items():
        if tags_now.get(key) != value:
            client.set_model_version_tag(name, version, key, value)
    if description_now != description:
        client.update_model_version(name, version, description=description)


def _state(client: MlflowClient, name: str) -> RegisteredModelState:
    try:
        model = client.get_registered_model(name)
    except MlflowException as error:
        # Only "does not exist" means absent: a lost server read as absent made `take`
        # record no model, and a later restore would delete the whole model, champion too.
        if error.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise
        return RegisteredModelState(exists=False)
    found = client.search_model_versions(f"name = '{name}'")
    records = {str(v.version): (dict(v.tags), v.description or "") for v in found}
    aliases = {alias: str(version) for alias, version in (model.aliases or {}).items()}
    return RegisteredModelState(True, set(records), aliases, model.description or "", records)
