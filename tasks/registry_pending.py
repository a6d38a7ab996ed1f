"""Registry writes a killed run left half-done, marked so that nobody takes them for a
normal version.

A registry stage writes a new version in several steps (the version with its tags, the
`challenger` alias, the gate's tags, the model card, `champion`). MLflow has no
transaction across them, and a failure's handler puts the registry back
(tasks/registry_snapshot.py), but a SIGKILL or a power cut runs no handler. So a new
version is born with the tag `registry_write` (in the same write that creates it: no
kill falls between), a version a run reuses is marked before its tags and card are
rewritten (unless it is `champion`: see registry.register_candidate), and the stage
removes the mark only once everything else is written,
just before `champion` may move to it (so `champion` never points at a half-written
version). The next registry stage (it holds the registry's slot: no live run is
writing) finds the versions still marked, tags them `interrupted` and puts a note at
the top of their card. A run that trains the same weights again reuses and completes
such a version; otherwise it stays marked, and nothing reads it as a candidate:
`instructflow evaluate` and `promote` refuse it (tasks/registry_lookup.py), the
registered model's page lists it apart (tasks/model_card.py).
"""

from collections.abc import Iterable
from datetime import UTC, datetime

from mlflow import MlflowClient

WRITE_TAG = "registry_write"
WRITING = "in progress"  # as born; a run still alive is writing it, else one was killed
INTERRUPTED = "interrupted"  # found so by a later registry stage


def pending_tags() -> dict[str, str]:
    """The tag a new version is created with."""
    return {WRITE_TAG: WRITING}


def mark_rewrite(client: MlflowClient, name: str, version: str) -> None:
    """Mark a version a run reuses (it trained the same weights) before rewriting its tags
    and card for that run, as a new version is born marked: a kill part-way would leave
    two runs' tags mixed on it. The stage's `finish` clears it with the new versions'."""
    client.set_model_version_tag(name, version, WRITE_TAG, WRITING)


def is_incomplete(tags: dict | None) -> bool:
    return WRITE_TAG in (tags or {})


def incomplete_reason(name: str, version: str, tags: dict) -> str:
    """Why `name` v`version` is no normal version (for a refusal), from its tags."""
    state = tags.get(WRITE_TAG)
    found = (
        "was stopped before it finished"
        if state == INTERRUPTED
        else "has not finished (or was stopped before it did)"
    )
    return (
        f"{name} v{version} is incomplete: the run writing it {found} "
        f"(tag {WRITE_TAG}={state}); no gate decision stands for it, and it is never champion"
    )


def banner(name: str, version: str) -> str:
    return f"# {name} v{version}: INCOMPLETE (registry write interrupted)"


def _note(name: str, version: str, when: str) -> str:
    return (
        f"{banner(name, version)}\n\n"
        f"The run that registered this version (or rewrote its tags and card, having trained "
        f"the same weights again) was stopped (killed, or its machine lost) "
        f"before it finished writing it; found at {when} or earlier by the next registry "
        f"stage. Its tags, gate decision or card may be missing or partial: it is no "
        f"candidate and never `champion` (tag `{WRITE_TAG}`: {INTERRUPTED}). A run that "
        "trains the same weights again completes it; otherwise it can be deleted.\n"
    )


def mark_interrupted(client: MlflowClient, names: Iterable[str]) -> list[str]:
    """Mark every version of `names` that a stopped run left being written: its tag says
    `interrupted`, its card starts with a note saying what happened (the partial card it
    had follows), and `challenger` no longer points at it. Call it only while holding the
    registry's slot: a version marked then belongs to no live run. Returns one line per
    version marked (none when there is nothing to mark)."""
    said = []
    at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    for name in names:
        for found in client.search_model_versions(f"name = '{name}'"):
            version, tags = str(found.version), dict(found.tags or {})
            description = found.description or ""
            marked = tags.get(WRITE_TAG) == INTERRUPTED
            if not is_incomplete(tags) or (
                marked and description.startswith(banner(name, version))
            ):
                continue
            client.set_model_version_tag(name, version, WRITE_TAG, INTERRUPTED)
            partial = f"\nWhat the run had written:\n\n{description}" if description else ""
            note = _note(name, version, at) + partial
            client.update_model_version(name, version, description=note)
            aliases = client.get_registered_model(name).aliases or {}
            if str(aliases.get("challenger")) == version:
                client.delete_registered_model_alias(name, "challenger")
            said.append(
                # "writing", not "that registered it": a reused version is rewritten by
                # a later run that trained the same weights again. "unless": that run
                # completes it right after this line (it said "never champion").
                f"{name} v{version}: the run writing it was stopped before it finished; "
                f"marked interrupted (tag {WRITE_TAG}): never champion unless a run that "
                "trains the same weights again completes it"
            )
    return said


def finish(client: MlflowClient, versions: Iterable[tuple[str, str]]) -> None:
    """Clear the mark of each (name, version) whose writes are all done."""
    for name, version in versions:
        # One call, marked or not: MLflow's stores delete an absent tag as a no-op (they
        # refuse only a version that is not there), so no read first.
        client.delete_model_version_tag(name, version, WRITE_TAG)
