"""What a killed run leaves (a RUNNING MLflow run), found by its dead liveness lock and marked KILLED."""

import multiprocessing
import os
import signal
import time

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
        # (a run below the stage's: every run below the dead one is closed, at any depth)
        below = client.create_run(experiment, tags={"mlflow.parentRunId": stage.info.run_id})
        live = client.create_run(experiment, tags=live_tags)
        # a run from another machine sharing the server: not ours to judge
        elsewhere = client.create_run(experiment, tags=dead_tags | {leftovers.TAG_HOST: "other"})
        assert leftovers.reap_mlflow_runs(client, experiment) == {dead.info.run_id: "KILLED"}
        runs = (dead, stage, below, live, elsewhere)
        status = {r: client.get_run(r.info.run_id).info.status for r in runs}
        assert list(status.values()) == ["KILLED", "KILLED", "KILLED", "RUNNING", "RUNNING"]
        # and it says why (a kill -9 leaves no reason of its own)
        reaped_tags = client.get_run(dead.info.run_id).data.tags
        assert reaped_tags["failure_reason"] == leftovers.KILLED_REASON
        # and the reaped run no longer shows its liveness token, which meant nothing after
        assert leftovers.TAG_TOKEN not in client.get_run(dead.info.run_id).data.tags
        assert (
            client.get_run(dead.info.run_id).data.tags[leftovers.TAG_HOST]
            == dead_tags[leftovers.TAG_HOST]
        )
    finally:
        leftovers.unregister(live_tags[leftovers.TAG_TOKEN])


def test_a_dead_run_whose_report_says_completed_is_closed_finished(root):
    # given a run killed in the moment after writing its report, before closing its run
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.create_experiment("x", artifact_location=(root / "a").as_uri())
    done, killed = (client.create_run(experiment, tags=_dead_run_tags()) for _ in range(2))
    (root / "reports" / done.info.run_id).mkdir(parents=True)
    (root / "reports" / done.info.run_id / "report.json").write_text('{"status": "completed"}')
    # then it is closed FINISHED, as its report says, and the other KILLED
    assert leftovers.reap_mlflow_runs(client, experiment) == {
        done.info.run_id: "FINISHED",
        killed.info.run_id: "KILLED",
    }
    assert client.get_run(done.info.run_id).info.status == "FINISHED"
    assert "failure_reason" not in client.get_run(done.info.run_id).data.tags


def test_the_liveness_token_is_bookkeeping_gone_from_the_run_once_it_ends(root, monkeypatch):
    from instructflow.tasks import lifecycle
    from tests.conftest import use_project

    client = MlflowClient(tracking_uri=use_project(monkeypatch, root))
    experiment = client.create_experiment("x", artifact_location=(root / "a").as_uri())
    live = leftovers.register()
    # given a pipeline run's MLflow run, tagged with its liveness token while it runs
    with lifecycle.ended(live) as holds_token:
        run = client.create_run(experiment, tags=live).info.run_id
        holds_token(run)
        assert client.get_run(run).data.tags[leftovers.TAG_TOKEN] == live[leftovers.TAG_TOKEN]
        client.set_terminated(run)
    # then once it ends, the token (internal, read only while a run is RUNNING) is gone from
    # the run's tags in the MLflow UI; its host and project root stay
    tags = client.get_run(run).data.tags
    assert leftovers.TAG_TOKEN not in tags
    assert tags[leftovers.TAG_HOST] == live[leftovers.TAG_HOST]
    # and a RUNNING run left without a token (its process died while ending) is reaped as dead
    client.create_run(experiment, tags={k: v for k, v in live.items() if k != leftovers.TAG_TOKEN})
    assert len(leftovers.reap_mlflow_runs(client, experiment)) == 1


def test_a_run_ends_without_searching_mlflow_for_its_token(root, monkeypatch):
    from instructflow.tasks import lifecycle
    from tests.conftest import use_project

    client = MlflowClient(tracking_uri=use_project(monkeypatch, root))
    experiment = client.create_experiment("x", artifact_location=(root / "a").as_uri())
    live = leftovers.register()
    searches = []
    real_search = MlflowClient.search_runs
    monkeypatch.setattr(
        MlflowClient, "search_runs", lambda *a, **k: searches.append(a) or real_search(*a, **k)
    )
    # given a pipeline run whose MLflow run is known when it ends (on every run's end path)
    with lifecycle.ended(live) as holds_token:
        run = client.create_run(experiment, tags=live).info.run_id
        holds_token(run)
        client.set_terminated(run)
    # then its token is deleted from that run without a search of the experiment
    assert leftovers.TAG_TOKEN not in client.get_run(run).data.tags
    assert searches == []


def _fake_server(home: str, orphan: bool) -> int:
    """A process that looks like Prefect's ephemeral server of PREFECT_HOME `home`: its pid.

    An orphan is started by a shell that exits at once, so init adopts it."""
    import subprocess
    import sys

    env = {"PREFECT__SERVER_EPHEMERAL": "1", "PREFECT_HOME": home, "PATH": os.environ["PATH"]}
    command = [sys.executable, "-c", "import time; time.sleep(120)", "--factory"]
    command.append(leftovers.EPHEMERAL_APP.decode())
    if not orphan:
        return subprocess.Popen(command, env=env).pid
    quoted = " ".join(f"'{part}'" for part in command)
    shell = subprocess.run(
        ["sh", "-c", f"{quoted} >/dev/null 2>&1 & echo $!"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(shell.stdout)
    for _ in range(50):  # the shell has exited: wait for the adoption to show
        if int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]) == 1:
            return pid
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    pytest.skip("orphans are adopted by a subreaper here, not by init")


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_the_temporary_server_a_killed_run_left_is_stopped_and_no_other(tmp_path, monkeypatch):
    home = str(tmp_path / ".prefect")
    monkeypatch.setenv("PREFECT_HOME", home)
    # given an orphaned server of this project, one of another project, and one whose run lives
    orphan = _fake_server(home, orphan=True)
    other_project = _fake_server(str(tmp_path / "elsewhere"), orphan=True)
    living_parent = _fake_server(home, orphan=False)
    try:
        # when a run clears what killed runs left
        stopped = leftovers.stop_orphaned_servers()
        # then only the orphan of this project got SIGTERM
        assert stopped == [orphan]
        for _ in range(50):
            if not os.path.exists(f"/proc/{orphan}"):
                break
            time.sleep(0.1)
        assert not os.path.exists(f"/proc/{orphan}")
        assert os.path.exists(f"/proc/{other_project}") and os.path.exists(f"/proc/{living_parent}")
    finally:
        for pid in (orphan, other_project, living_parent):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_killed_runs_flow_run_and_its_unfinished_task_runs_are_marked_crashed(
    prefect_harness,
):
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.states import Completed, Running

    @flow
    def pipeline() -> None: ...

    @task
    def stage() -> None: ...

    with get_client(sync_client=True) as client:
        # given a flow run the killed process left Running, one stage done and one Running
        flow_run = client.create_flow_run(pipeline, state=Running())
        done = client.create_task_run(stage, flow_run.id, "0", state=Completed())
        killed = client.create_task_run(stage, flow_run.id, "1", state=Running())
        # when the next run clears what it left
        leftovers._close_flow_run(str(flow_run.id), "KILLED")
        # then the flow run and the interrupted stage are Crashed; the finished stage stays
        states = [
            client.read_flow_run(flow_run.id).state.type.value,
            client.read_task_run(killed.id).state.type.value,
            client.read_task_run(done.id).state.type.value,
        ]
        # and a run killed after its report said completed (its MLflow run closed FINISHED)
        # reads Completed in Prefect too, saying what happened after
        finished = client.create_flow_run(pipeline, state=Running())
        leftovers._close_flow_run(str(finished.id), "FINISHED")
        after = client.read_flow_run(finished.id).state
    assert states == ["CRASHED", "CRASHED", "COMPLETED"]
    assert after.type.value == "COMPLETED" and "its process was then killed" in after.message


def test_a_deployments_run_names_the_deployment_as_its_mlflow_source(monkeypatch):
    from instructflow.tasks import lifecycle

    # Prefect's runtime reads a deployment's name from this variable first (its own mock)
    monkeypatch.setenv("PREFECT__RUNTIME__DEPLOYMENT__NAME", "manual-run")
    assert lifecycle.source_tag() == {"mlflow.source.name": "Prefect deployment manual-run"}
    monkeypatch.delenv("PREFECT__RUNTIME__DEPLOYMENT__NAME")
    assert lifecycle.source_tag() == {}  # a run from the command line
