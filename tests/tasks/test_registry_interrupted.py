"""A registry write killed part-way (SIGKILL: no handler runs, nothing is put back) leaves
versions marked as being written; the next registry stage marks them interrupted (tag and
card say so), and no reader takes one for a normal version."""

import json
import multiprocessing
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow import MlflowClient

from instructflow.tasks import registry, registry_pending
from instructflow.tasks.model_card import describe_registered_model, describe_reward_models
from instructflow.tasks.registry_config import RegistryLookupError
from instructflow.tasks.registry_lookup import find_version, make_champion

POLICY, RM = "instructflow-policy-smoke", "instructflow-reward-model-smoke"


def _checkpoint(root: Path, key: str, weights: bytes) -> str:
    folder = root / "runs" / key / "model"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    return str(folder)


def _register_then_die(uri: str, dirs: tuple[str, str]) -> None:
    """In a process of its own: register a candidate and SIGKILL itself at its first alias
    write (both versions created, no alias, tag or card written after)."""
    os.environ["MLFLOW_TRACKING_URI"] = uri
    logged = lambda model_dir, _name: SimpleNamespace(model_uri=model_dir)  # noqa: E731
    registry.LOGGERS = {"policy": logged, "reward_model": logged}
    MlflowClient.set_registered_model_alias = lambda *_a: os.kill(os.getpid(), signal.SIGKILL)
    registry.register_candidate(MlflowClient(), (POLICY, RM), dirs, {"seed": 0}, {}, {})


@pytest.fixture
def killed(client, tmp_path) -> MlflowClient:
    """v1 of both models registered and made champion, then a run killed while registering v2."""
    first = (_checkpoint(tmp_path, "ppo-1", b"one"), _checkpoint(tmp_path, "rm-1", b"rm1"))
    registry.register_candidate(client, (POLICY, RM), first, {"seed": 0}, {}, {})
    registry_pending.finish(client, [(POLICY, "1"), (RM, "1")])
    make_champion(client, POLICY, "1", "gate")
    dirs = (_checkpoint(tmp_path, "ppo-2", b"two"), _checkpoint(tmp_path, "rm-2", b"rm2"))
    child = multiprocessing.get_context("spawn").Process(
        target=_register_then_die, args=(client.tracking_uri, dirs)
    )
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL
    return client


def _tags(client, name: str, version: str) -> dict:
    return dict(client.get_model_version(name, version).tags)


def test_a_version_is_born_marked_as_being_written_and_a_finished_write_clears_it(client, tmp_path):
    dirs = (_checkpoint(tmp_path, "ppo-1", b"one"), _checkpoint(tmp_path, "rm-1", b"rm1"))
    registry.register_candidate(client, (POLICY, RM), dirs, {"seed": 0}, {}, {})
    # the mark comes with the version's creation (one write), so no kill can fall before it
    assert _tags(client, POLICY, "1")[registry_pending.WRITE_TAG] == registry_pending.WRITING
    assert _tags(client, RM, "1")[registry_pending.WRITE_TAG] == registry_pending.WRITING
    registry_pending.finish(client, [(POLICY, "1"), (RM, "1")])
    assert registry_pending.WRITE_TAG not in _tags(client, POLICY, "1")
    assert registry_pending.WRITE_TAG not in _tags(client, RM, "1")


class _Counting:
    """A client that records the name of every registry call made through it."""

    def __init__(self, client: MlflowClient):
        self.client, self.calls = client, []

    def __getattr__(self, name: str):
        self.calls.append(name)
        return getattr(self.client, name)


def test_finishing_a_write_is_one_call_per_version_marked_or_not(client, tmp_path):
    dirs = (_checkpoint(tmp_path, "ppo-1", b"one"), _checkpoint(tmp_path, "rm-1", b"rm1"))
    registry.register_candidate(client, (POLICY, RM), dirs, {"seed": 0}, {}, {})
    client.delete_model_version_tag(RM, "1", registry_pending.WRITE_TAG)
    # given a marked version and one without the mark (MLflow deletes an absent tag as a no-op)
    counting = _Counting(client)
    registry_pending.finish(counting, [(POLICY, "1"), (RM, "1")])
    # then each costs one call, and neither is marked after
    assert counting.calls == ["delete_model_version_tag"] * 2
    assert registry_pending.WRITE_TAG not in _tags(client, POLICY, "1")
    assert registry_pending.WRITE_TAG not in _tags(client, RM, "1")


def test_a_killed_registry_write_is_marked_interrupted_at_the_next_stage(killed):
    client = killed
    # given a run killed after creating v2 of both models, before its alias, tags and cards
    assert _tags(client, POLICY, "2")[registry_pending.WRITE_TAG] == registry_pending.WRITING
    # when the next registry stage looks (it holds the registry's slot: no live run writes)
    said = registry_pending.mark_interrupted(client, [POLICY, RM])
    # then it says so in one line per version
    assert said == [
        f"{POLICY} v2: the run writing it was stopped before it finished; "
        "marked interrupted (tag registry_write): never champion unless a run that trains "
        "the same weights again completes it",
        f"{RM} v2: the run writing it was stopped before it finished; "
        "marked interrupted (tag registry_write): never champion unless a run that trains "
        "the same weights again completes it",
    ]
    # and each version's tag and card say what happened
    for name in (POLICY, RM):
        version = client.get_model_version(name, "2")
        assert version.tags[registry_pending.WRITE_TAG] == registry_pending.INTERRUPTED
        assert version.description.startswith(
            f"# {name} v2: INCOMPLETE (registry write interrupted)"
        )
    # and looking again changes nothing
    assert registry_pending.mark_interrupted(client, [POLICY, RM]) == []
    # and champion stays v1
    assert str(client.get_model_version_by_alias(POLICY, "champion").version) == "1"


def test_no_reader_takes_an_interrupted_version_for_a_normal_one(killed):
    client = killed
    for _ in range(2):  # killed (being written) and, once the next stage looked, interrupted
        # evaluate and promote refuse it, saying why
        with pytest.raises(RegistryLookupError, match="v2 is incomplete: the run writing it "):
            find_version(client, POLICY, "2")
        with pytest.raises(RegistryLookupError, match="v2 is incomplete"):
            make_champion(client, POLICY, "2", "manual")
        assert str(client.get_model_version_by_alias(POLICY, "champion").version) == "1"
        # the registered models' pages name it as incomplete, not as the latest version
        status = describe_registered_model(client, POLICY)
        assert f"Incomplete: v2 (tag `{registry_pending.WRITE_TAG}`)" in status
        assert "Latest: v1." in describe_reward_models(client, RM, POLICY)
        registry_pending.mark_interrupted(client, [POLICY, RM])


def test_the_same_weights_registered_again_complete_the_interrupted_version(killed, tmp_path):
    client = killed
    registry_pending.mark_interrupted(client, [POLICY, RM])
    # when the same command runs again and trains the same weights
    dirs = (_checkpoint(tmp_path, "ppo-2b", b"two"), _checkpoint(tmp_path, "rm-2b", b"rm2"))
    versions = registry.register_candidate(client, (POLICY, RM), dirs, {"seed": 0}, {}, {})
    # then it reuses v2 and the RM gets its card (the interrupted note was no card)
    assert versions == ("2", "2")
    card = client.get_model_version(RM, "2").description
    assert card.startswith(f"# {RM} v2") and "INCOMPLETE" not in card
    # and once its writes are done, v2 is a normal version
    registry_pending.finish(client, [(POLICY, "2"), (RM, "2")])
    assert registry_pending.WRITE_TAG not in _tags(client, POLICY, "2")
    assert find_version(client, POLICY, "2").version in (2, "2")


def _finished(client, tmp_path, key: str, weights: bytes) -> tuple[str, str]:
    """A candidate registered and its writes done; its checkpoint folders."""
    dirs = (_checkpoint(tmp_path, f"ppo-{key}", weights), _checkpoint(tmp_path, f"rm-{key}", b"rm"))
    versions = registry.register_candidate(client, (POLICY, RM), dirs, {"seed": 0}, {}, {})
    registry_pending.finish(client, list(zip((POLICY, RM), versions, strict=True)))
    return dirs


def test_a_reused_version_is_marked_while_its_tags_and_card_are_rewritten(client, tmp_path):
    # given v1 of both, written in full, and a later run that trained the same weights
    _finished(client, tmp_path, "1", b"one")
    dirs = (_checkpoint(tmp_path, "ppo-1b", b"one"), _checkpoint(tmp_path, "rm-1b", b"rm"))
    # when that run stops at its first rewrite of a reused version's tags (no handler runs)
    real = client.set_model_version_tag

    def stop_at_a_rewrite(name, version, key, value):
        if key != registry_pending.WRITE_TAG:
            raise KeyboardInterrupt
        real(name, version, key, value)

    client.set_model_version_tag = stop_at_a_rewrite
    with pytest.raises(KeyboardInterrupt):
        registry.register_candidate(client, (POLICY, RM), dirs, {"seed": 1}, {}, {})
    client.set_model_version_tag = real
    # then the version it was rewriting carries the mark, as a new version would
    assert _tags(client, RM, "1")[registry_pending.WRITE_TAG] == registry_pending.WRITING
    # and the next registry stage finds and reports it like any interrupted write
    said = registry_pending.mark_interrupted(client, [POLICY, RM])
    assert said == [
        f"{RM} v1: the run writing it was stopped before it finished; "
        "marked interrupted (tag registry_write): never champion unless a run that trains "
        "the same weights again completes it"
    ]
    # and a run that completes the rewrite leaves it a normal version
    versions = registry.register_candidate(client, (POLICY, RM), dirs, {"seed": 1}, {}, {})
    assert versions == ("1", "1")
    assert _tags(client, POLICY, "1")[registry_pending.WRITE_TAG] == registry_pending.WRITING
    registry_pending.finish(client, [(POLICY, "1"), (RM, "1")])
    assert registry_pending.WRITE_TAG not in _tags(client, RM, "1")
    assert _tags(client, POLICY, "1")["last_confirmed_by_seed"] == "1"


def test_the_champion_reused_is_rewritten_unmarked(client, tmp_path):
    # given v1 champion, and a run that trained its weights again
    _finished(client, tmp_path, "1", b"one")
    make_champion(client, POLICY, "1", "gate")
    dirs = (_checkpoint(tmp_path, "ppo-1b", b"one"), _checkpoint(tmp_path, "rm-1b", b"rm"))
    registry.register_candidate(client, (POLICY, RM), dirs, {"seed": 1}, {}, {})
    # then the champion carries no mark while rewritten: a mark would make evaluate and
    # promote refuse the champion people serve (its weights are whole; only its figures move)
    assert registry_pending.WRITE_TAG not in _tags(client, POLICY, "1")
    assert find_version(client, POLICY, "champion").version in (1, "1")
    # while its reward model, no champion, is marked until the stage's writes end
    assert _tags(client, RM, "1")[registry_pending.WRITE_TAG] == registry_pending.WRITING
