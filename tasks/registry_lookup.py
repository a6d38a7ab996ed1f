"""Looking a registered model's versions and aliases up, and saying what is there when
one asked for is not (MLflow's own error is a traceback)."""

import json
from datetime import UTC, datetime

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from instructflow.tasks.model_card import (
    OUTSIDE,
    describe_registered_model,
    with_champion_status,
)
from instructflow.tasks.registry_config import POLICY_MODEL, RegistryLookupError
from instructflow.tasks.registry_pending import incomplete_reason, is_incomplete

# The tags that say how a version became champion, which only the champion holds: each
# promotion writes its own set, and a version replaced drops them (they would read as if it
# were champion still) for `replaced_by`; `promotion_history` keeps every change on both.
PROMOTION_TAGS = {"promoted_by", "promoted_at", "previous_champion", "promotion_reason"}
REPLACED_TAGS = {"replaced_by", "replaced_at"}
HISTORY = "promotion_history"
HISTORY_CHARS = 4000  # MLflow refuses tag values over 5000 characters: the oldest lines go
# A registered model's tag holding a move of `champion` under way (see _move).
MOVE_TAG = "champion_move"


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def find_version(client: MlflowClient, name: str, ref: str):
    """Version `ref` (a number or an alias) of registered model `name`, or a RegistryLookupError
    naming what the registry holds instead (MLflow's own error is a traceback), or saying
    that the version is incomplete (a run stopped while writing it: tasks/registry_pending.py)."""
    ref = str(ref)  # MLflow's entities give versions as int
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        names = sorted(m.name for m in client.search_registered_models())
        held = ", ".join(names) if names else "none yet: run the pipeline first"
        raise RegistryLookupError(f"no registered model {name!r} (registered: {held})") from None
    try:
        found = (
            client.get_model_version(name, ref)
            if ref.isdigit()
            else client.get_model_version_by_alias(name, ref)
        )
    except MlflowException:
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
        aliases = ", ".join(f"{a} -> v{v}" for a, v in sorted(model.aliases.items())) or "none"
        what = f"version {ref}" if ref.isdigit() else f"alias {ref!r}"
        raise RegistryLookupError(
            f"{name} has no {what} (versions: {', '.join(map(str, versions)) or 'none'}; "
            f"aliases: {aliases})"
        ) from None
    if is_incomplete(found.tags):
        raise RegistryLookupError(incomplete_reason(name, str(found.version), dict(found.tags)))
    return found


def champion_version(client: MlflowClient, name: str = POLICY_MODEL) -> str | None:
    return alias_version(client, name, "champion")


def make_champion(
    client: MlflowClient, name: str, version: str, promoted_by: str, **record: str
) -> bool:
    """Point `champion` at `version`, tagging whose word moved it (`promoted_by`), the
    champion before it (`previous_champion`, absent when there was none) and any `record`
    (e.g. the reason of an override). The version it replaces drops those tags for
    `replaced_by`; both add the change to `promotion_history` and get their card's
    Champion section rewritten, so no version reads as champion but the champion.

    False, and nothing written, when `version` is champion already (its weights reused
    by a later run, or approved twice): its tags keep how it got there.
    """
    previous = champion_version(client, name)
    if previous == str(version):
        return False
    tags = dict(client.get_model_version(name, version).tags or {})
    if is_incomplete(tags):  # never champion: a run stopped while writing it
        raise RegistryLookupError(incomplete_reason(name, str(version), tags))
    reconcile_champion(client, name)
    at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    tags = {"promoted_by": promoted_by, "promoted_at": at, **record}
    if previous is not None:
        tags["previous_champion"] = previous
    why = f": {record['promotion_reason']}" if record.get("promotion_reason") else ""
    after = f", after v{previous}" if previous is not None else ""
    restate = [[str(version), tags, f"{at}: champion ({promoted_by}{after}){why}"]]
    if previous is not None:
        replaced = {"replaced_by": str(version), "replaced_at": at}
        restate.append([previous, replaced, f"{at}: replaced by v{version} ({promoted_by})"])
    _move(client, name, {"to": str(version), "by": promoted_by, "restate": restate})
    return True


def _move(client: MlflowClient, name: str, move: dict) -> None:
    """Move `champion` to move["to"] (None: unset it), then restate the versions it names.

    The move is recorded on the registered model first and cleared last: a run killed
    between the alias and the versions' tags leaves it, and the next reconcile_champion
    finishes it in its maker's name (without it the alias would read as set outside).
    """
    client.set_registered_model_tag(name, MOVE_TAG, json.dumps(move))
    if move["to"] is None:
        client.delete_registered_model_alias(name, "champion")
    else:
        client.set_registered_model_alias(name, "champion", move["to"])
    _restate_all(client, name, move)
    client.delete_registered_model_tag(name, MOVE_TAG)


def _restate_all(client: MlflowClient, name: str, move: dict) -> None:
    """Write on each version a move names its tags and event (its card's Champion section)."""
    for version, tags, event in move["restate"]:
        _restate(client, name, version, tags, event)


def _finish_move(client: MlflowClient, name: str, champion: str | None) -> str | None:
    """Finish a move of `champion` a killed run left recorded (see _move), if the alias
    did move (`champion` is where it stands now); say what was mended."""
    try:
        recorded = (client.get_registered_model(name).tags or {}).get(MOVE_TAG)
    except MlflowException:  # not registered yet: nothing moved
        return None
    if recorded is None:
        return None
    move = json.loads(recorded)
    said = None
    if move["to"] == champion:  # else the alias never moved, or moved again since
        _restate_all(client, name, move)
        describe_registered_model(client, name)
        now = f"v{champion}" if champion else "no version"
        said = (
            f"{name}: `champion` was moved to {now} ({move['by']}) by a run stopped before it "
            "had written it on the versions; their tags and cards now say so"
        )
    client.delete_registered_model_tag(name, MOVE_TAG)
    return said


def unset_champion(client: MlflowClient, name: str, by: str) -> None:
    """Leave `name` with no champion (`by`: whose word), its last champion saying so."""
    reconcile_champion(client, name)
    previous = champion_version(client, name)
    if previous is None:
        return
    at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    replaced = {"replaced_by": "none", "replaced_at": at}
    _move(
        client,
        name,
        {"to": None, "by": by, "restate": [[previous, replaced, f"{at}: champion unset ({by})"]]},
    )


def put_back(client: MlflowClient, name: str, incumbent: str, rejected: str, why: str) -> None:
    """Undo a gate's promotion that people's rankings reject: `champion` back where that gate
    found it (`incumbent`: its "champion vN", else there was none), with why on the version
    (its own earlier gate reason would read as the reason it is champion again)."""
    if not incumbent.startswith("champion v"):
        unset_champion(client, name, "human")
        return
    reason = f"people's rankings rejected v{rejected}, which the gate had promoted: {why}"
    make_champion(
        client, name, incumbent.removeprefix("champion v"), "human", promotion_reason=reason
    )


def reconcile_champion(client: MlflowClient, name: str) -> str | None:
    """Make the versions' champion tags and cards agree with where `champion` points, when
    the alias was moved or deleted outside instructflow (MLflow's UI or client), and say
    what was mended; None when they agree.

    MLflow keeps no time for an alias, so the change is dated when it is found: "<time>
    or earlier". Called before every write that moves `champion` and by the registry
    stage, so no version reads as champion but the champion for longer than one run.
    """
    champion = champion_version(client, name)
    finished = _finish_move(client, name, champion)
    found = client.search_model_versions(f"name = '{name}'")
    tags = {str(v.version): dict(v.tags or {}) for v in found}
    stale = sorted((v for v, t in tags.items() if v != champion and t.get("promoted_by")), key=int)
    unrecorded = champion is not None and not tags.get(champion, {}).get("promoted_by")
    if not stale and not unrecorded:
        return finished
    at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    when = f"{at} or earlier"
    if unrecorded:
        record = {"promoted_by": OUTSIDE, "promoted_at": when}
        if len(stale) == 1:
            record["previous_champion"] = stale[0]
        after = f", after v{stale[0]}" if len(stale) == 1 else ""
        _restate(client, name, champion, record, f"{when}: champion ({OUTSIDE}{after})")
    now = f"v{champion}" if champion else "no version"
    for version in stale:
        replaced = {"replaced_by": champion or "none", "replaced_at": when}
        _restate(client, name, version, replaced, f"{when}: replaced by {now} ({OUTSIDE})")
    describe_registered_model(client, name)
    moved = f"`champion` is {now}" + (f", not v{', v'.join(stale)}" if stale else "")
    said = f"{name}: {moved} ({OUTSIDE}); its versions' tags and cards now say so"
    return f"{finished}\n{said}" if finished else said


def _restate(client: MlflowClient, name: str, version: str, tags: dict, event: str) -> None:
    """Write a version's champion status (`tags`, dropping the other status's), add `event`
    to its history and rewrite its card's Champion section from the tags."""
    found = client.get_model_version(name, version)
    held = dict(found.tags or {})
    for key in (set(held) & (PROMOTION_TAGS | REPLACED_TAGS)) - set(tags):
        client.delete_model_version_tag(name, version, key)
        del held[key]
    lines = (held.get(HISTORY) or "").splitlines()
    lines += [] if lines[-1:] == [event] else [event]  # a move finished again: once
    while len(lines) > 1 and len("\n".join(lines)) > HISTORY_CHARS:
        lines.pop(0)
    tags = tags | {HISTORY: "\n".join(lines)}
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    card = with_champion_status(found.description or "", held | tags)
    client.update_model_version(name, version, description=card)


def write_card(client: MlflowClient, name: str, version: str, card: str) -> None:
    """Write `card` as the version's description, with its Champion section from its tags."""
    tags = dict(client.get_model_version(name, version).tags or {})
    client.update_model_version(name, version, description=with_champion_status(card, tags))


def evaluable_version(client: MlflowClient, name: str, ref: str):
    """A version number or an alias -> the registered model version, if the embedded world's
    test users can judge it (a policy trained on a dataset is evaluated by its own run)."""
    version = find_version(client, name, ref)
    if version.tags.get("data_dir"):
        named = "" if ref == str(version.version) else f" ({ref})"  # not "v2 (2)"
        raise RegistryLookupError(
            f"{name} v{version.version}{named} was trained on the dataset in "
            f"{version.tags['data_dir']}: `instructflow evaluate` scores on the embedded world's "
            "test users; that run's report holds its evaluation on the dataset's test split"
        )
    return version
