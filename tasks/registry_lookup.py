"""Looking a registered model's versions and aliases up, and saying what is there when
one asked for is not (MLflow's own error is a traceback)."""

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from instructflow.tasks.registry_config import POLICY_MODEL, RegistryLookupError

# The tags that say how a version became champion: each promotion writes its own set.
PROMOTION_TAGS = {"promoted_by", "previous_champion", "promotion_reason"}


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def find_version(client: MlflowClient, name: str, ref: str):
    """Version `ref` (a number or an alias) of registered model `name`, or a RegistryLookupError
    naming what the registry holds instead (MLflow's own error is a traceback)."""
    ref = str(ref)  # MLflow's entities give versions as int
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        names = sorted(m.name for m in client.search_registered_models())
        held = ", ".join(names) if names else "none yet: run the pipeline first"
        raise RegistryLookupError(f"no registered model {name!r} (registered: {held})") from None
    try:
        if ref.isdigit():
            return client.get_model_version(name, ref)
        return client.get_model_version_by_alias(name, ref)
    except MlflowException:
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
        aliases = ", ".join(f"{a} -> v{v}" for a, v in sorted(model.aliases.items())) or "none"
        what = f"version {ref}" if ref.isdigit() else f"alias {ref!r}"
        raise RegistryLookupError(
            f"{name} has no {what} (versions: {', '.join(map(str, versions)) or 'none'}; "
            f"aliases: {aliases})"
        ) from None


def champion_version(client: MlflowClient, name: str = POLICY_MODEL) -> str | None:
    return alias_version(client, name, "champion")


def make_champion(
    client: MlflowClient, name: str, version: str, promoted_by: str, **record: str
) -> bool:
    """Point `champion` at `version`, tagging whose word moved it (`promoted_by`), the
    champion before it (`previous_champion`, absent when there was none) and any `record`
    (e.g. the reason of an override).

    False, and nothing written, when `version` is champion already (its weights reused
    by a later run, or approved twice): its tags keep how it got there.
    """
    previous = champion_version(client, name)
    if previous == str(version):
        return False
    client.set_registered_model_alias(name, "champion", version)
    tags = {"promoted_by": promoted_by, **record}
    if previous is not None:
        tags["previous_champion"] = previous
    stale = (set(client.get_model_version(name, version).tags or {}) & PROMOTION_TAGS) - set(tags)
    for key in stale:  # an earlier promotion's, which would read as this one's
        client.delete_model_version_tag(name, version, key)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    return True
