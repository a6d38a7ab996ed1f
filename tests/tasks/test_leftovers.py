"""What a killed run leaves (a RUNNING MLflow run), found by its dead liveness lock and marked KILLED."""

import multiprocessing
import os
import signal

import pytest
from mlflow import MlflowClient

from instructflow.tasks import leftovers


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(tmp_path))
    return tmp_path


def _register_and_wait(queue) -> None:
    queue.put(leftovers.register())
    signal.pause()


def _dead_run_tags() -> dict[str, str]:
    """Tags of a run whose process registered, then was killed with SIGKILL."""
    queue = multiprocessing.get_context("fork").Queue()
    child = multiprocessing.get_context("fork").Process(target=_register_and_wait, args=(queue,))
    child.start()
    tags = queue.get(timeout=60)
    assert leftovers.is_alive(tags[leftovers.TAG_TOKEN])  # alive while its process lives
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    return tags


def test_a_killed_process_releases_its_lock_and_its_file_is_cleared(root):
    dead = _dead_run_tags()
    assert not leftovers.is_alive(dead[leftovers.TAG_TOKEN])
    mine = leftovers.register()
    try:
        assert leftovers.is_alive(mine[leftovers.TAG_TOKEN])
        assert not leftovers.others_alive(mine[leftovers.TAG_TOKEN])
        assert [p.name for p in leftovers.live_dir().iterdir()] == [mine[leftovers.TAG_TOKEN]]
    finally:
        leftovers.unregister(mine[leftovers.TAG_TOKEN])
    assert list(leftovers.live_dir().iterdir()) == []


def test_running_runs_of_a_dead_process_are_marked_killed_live_ones_kept(root):
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.create_experiment("x", artifact_location=(root / "a").as_uri())
    dead_tags, live_tags = _dead_run_tags(), leftovers.register()
    try:
        dead = client.create_run(experiment, tags=dead_tags)
        stage = client.create_run(experiment, tags={"mlflow.parentRunId": dead.info.run_id})
        live = client.create_run(experiment, tags=live_tags)
        # a run from another machine sharing the server: not ours to judge
        elsewhere = client.create_run(experiment, tags=dead_tags | {leftovers.TAG_HOST: "other"})
        assert leftovers.reap_mlflow_runs(client, experiment) == [dead.info.run_id]
        status = {
            r: client.get_run(r.info.run_id).info.status for r in (dead, stage, live, elsewhere)
        }
        assert list(status.values()) == ["KILLED", "KILLED", "RUNNING", "RUNNING"]
    finally:
        leftovers.unregister(live_tags[leftovers.TAG_TOKEN])
