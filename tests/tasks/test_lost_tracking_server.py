"""A tracking server lost while a stage trains: training goes on, its steps wait and arrive
once the server is back; the stage's end waits for it a while, then fails as before."""

import subprocess
import sys
import threading
import time
import urllib.request

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from instructflow.tasks import batched_log, outages, tracking
from instructflow.tasks.tracked import tracked_stage
from tests.conftest import use_project
from tests.live_stack import free_port

# What MLflow's HTTP client raises once its retries are spent on a stopped server.
REFUSED = (
    "API request to http://127.0.0.1:9/api/2.0/mlflow/runs/log-batch failed with exception "
    "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: "
    "/api/2.0/mlflow/runs/log-batch (Caused by NewConnectionError('Failed to establish a new "
    "connection: [Errno 111] Connection refused'))"
)


class Server:
    """The store behind a switch: while `down`, writes fail as a lost server's do and
    /health does not answer; every write tried is counted."""

    def __init__(self, monkeypatch):
        self.down = False
        self.writes_tried = 0
        self.probes = 0
        self.back_after_probes: int | None = None  # comes back by itself after so many
        self.lost_as_a_run_ends = False  # goes away as the next run is ended (then as above)
        real, real_end = MlflowClient.log_batch, MlflowClient.set_terminated
        server = self

        class Client(MlflowClient):
            def log_batch(self, run_id, metrics=(), params=(), **kwargs):
                server.writes_tried += 1
                if server.down:
                    raise MlflowException(REFUSED)
                return real(self, run_id, metrics=metrics, params=params, **kwargs)

        def answers(_uri, _timeout=1.0):
            self.probes += 1
            if self.back_after_probes is not None and self.probes >= self.back_after_probes:
                self.down = False
            return not self.down

        def set_terminated(client, run_id, status=None, end_time=None):
            if server.lost_as_a_run_ends:
                server.lost_as_a_run_ends, server.down = False, True
            if server.down:
                raise MlflowException(REFUSED)
            return real_end(client, run_id, status, end_time)

        monkeypatch.setattr(batched_log, "MlflowClient", Client)
        monkeypatch.setattr(MlflowClient, "set_terminated", set_terminated)
        monkeypatch.setattr(outages, "server_answers", answers)


@pytest.fixture
def store(tmp_path, monkeypatch) -> MlflowClient:
    use_project(monkeypatch, tmp_path)
    monkeypatch.setattr(tracking.BatchedLog, "FLUSH_SECONDS", 0.0)  # every step written at once
    monkeypatch.setattr(tracking.BatchedLog, "RETRY_SECONDS", 0.0)
    return MlflowClient(tracking.tracking_uri())


def _curve(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def test_steps_logged_while_the_server_is_lost_arrive_in_order_once_it_is_back(
    store, monkeypatch, capsys
):
    server = Server(monkeypatch)
    with tracking.stage_run("sft", None) as run:
        for step in range(8):
            server.down = step in (3, 4, 5)  # lost for three steps, then back
            tracking.log_step_metrics({"loss": float(step)}, step)  # never raises
        assert _curve(store, run.info.run_id, "loss") == [(s, float(s)) for s in range(8)]
    out = capsys.readouterr().out
    assert out.count("the MLflow tracking server is lost") == 1  # said once, not each step
    assert "Connection refused" in out and "training goes on" in out
    assert "is back: waiting steps written" in out


def test_while_lost_the_server_is_looked_for_by_health_not_by_writes(store, monkeypatch):
    server = Server(monkeypatch)
    with tracking.stage_run("rm", None):
        server.down, probed_at_start = True, server.probes
        for step in range(5):
            tracking.log_step_metrics({"loss": 1.0}, step)
        # one write found it lost (each costs MLflow's 15 s of retries); then only /health
        assert (server.writes_tried, server.probes - probed_at_start) == (1, 4)
        server.down = False


def test_the_store_refusing_a_write_for_another_reason_still_fails_the_stage(store, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise MlflowException("INVALID_PARAMETER_VALUE: metric key too long")

    monkeypatch.setattr(batched_log.MlflowClient, "log_batch", refuse)
    with pytest.raises(MlflowException, match="INVALID_PARAMETER_VALUE"):
        with tracking.stage_run("sft", None):
            tracking.log_step_metrics({"loss": 1.0}, 0)


def test_a_stage_end_waits_for_its_lost_server_then_logs_everything(store, tmp_path, monkeypatch):
    server = Server(monkeypatch)
    monkeypatch.setattr(outages, "OUTAGE_WAIT_SECONDS", 60.0)
    with tracked_stage("judge", tmp_path / "out", None, {"lr": 0.01}) as stage:
        tracking.log_step_metrics({"judge/loss": 0.7}, 0)
        server.down = True
        tracking.log_step_metrics({"judge/loss": 0.6}, 1)
        server.back_after_probes = server.probes + 2  # back a second into the stage's end
        result = stage.done({"judge/accuracy": 0.61})  # waits, then writes
    run = store.get_run(result["mlflow_run_id"])
    assert _curve(store, run.info.run_id, "judge/loss") == [(0, 0.7), (1, 0.6)]
    assert run.data.metrics["judge/accuracy"] == 0.61 and run.data.params == {"lr": "0.01"}


def test_a_server_lost_after_the_last_step_was_written_is_waited_for_too(
    store, tmp_path, monkeypatch
):
    server = Server(monkeypatch)
    monkeypatch.setattr(outages, "OUTAGE_WAIT_SECONDS", 60.0)
    with tracked_stage("judge", tmp_path / "out", None, {}) as stage:
        tracking.log_step_metrics({"judge/loss": 0.7}, 0)  # written: nothing found it lost
        server.down, server.back_after_probes = True, server.probes + 2
        result = stage.done({"judge/accuracy": 0.61})
    assert store.get_run(result["mlflow_run_id"]).data.metrics["judge/accuracy"] == 0.61


def test_a_server_that_stays_lost_fails_the_stage_after_the_wait(store, tmp_path, monkeypatch):
    from instructflow.tasks.stage import DONE_MARKER

    server = Server(monkeypatch)
    monkeypatch.setattr(outages, "OUTAGE_WAIT_SECONDS", 0.05)
    with pytest.raises(MlflowException, match="Connection refused"):
        with tracked_stage("judge", tmp_path / "out", None, {}) as stage:
            server.down = True
            tracking.log_step_metrics({"judge/loss": 0.7}, 0)
            started = time.monotonic()
            try:
                stage.done({"judge/accuracy": 0.61})
            finally:
                assert time.monotonic() - started >= 0.05  # it did wait
    assert not (tmp_path / "out" / DONE_MARKER).exists()  # not done: the stage runs again


def test_a_server_lost_just_as_a_stage_ends_its_run_is_waited_for_then_the_stage_is_done(
    store, tmp_path, monkeypatch
):
    from instructflow.tasks.stage import is_done

    # given a server that goes away after the stage's last write, as its run is ended
    server = Server(monkeypatch)
    monkeypatch.setattr(outages, "OUTAGE_WAIT_SECONDS", 60.0)
    server.lost_as_a_run_ends, server.back_after_probes = True, server.probes + 2
    with tracked_stage("judge", tmp_path / "out", None, {}) as stage:
        result = stage.done({"judge/accuracy": 0.61})
    # then the end waited for it: the run is FINISHED and the stage done, nothing lost
    assert store.get_run(result["mlflow_run_id"]).info.status == "FINISHED"
    assert is_done(tmp_path / "out")


def test_a_stage_whose_run_cannot_be_ended_is_not_marked_done_and_its_retry_resumes(
    store, tmp_path, monkeypatch
):
    from instructflow.tasks.checkpoints import RESUME, prepare_out_dir
    from instructflow.tasks.stage import DONE_MARKER

    # given a training stage with a resume checkpoint, whose server goes away for good as
    # its run is ended
    server = Server(monkeypatch)
    monkeypatch.setattr(outages, "OUTAGE_WAIT_SECONDS", 0.05)
    out = tmp_path / "out"
    with pytest.raises(MlflowException, match="Connection refused"):
        with tracked_stage("judge", out, None, {}, training=True) as stage:
            (stage.out / RESUME / "step-000000007").mkdir(parents=True)
            server.lost_as_a_run_ends = True
            stage.done({"judge/accuracy": 0.61})
    # then it is not marked done: the retry keeps its checkpoint (resumes), not an empty folder
    assert not (out / DONE_MARKER).exists()
    prepare_out_dir(out)
    assert (out / RESUME / "step-000000007").is_dir()


def test_a_stage_that_cannot_be_marked_done_leaves_its_run_failed_not_finished(
    store, tmp_path, monkeypatch
):
    import errno

    # given a disk that fills up as the stage writes its done marker, its run already ended
    def full_disk(_out, _result):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tracking, "mark_done", full_disk)
    with pytest.raises(OSError, match="No space left"):
        with tracked_stage("judge", tmp_path / "out", None, {}) as stage:
            run_id = stage.run.info.run_id
            stage.done({"judge/accuracy": 0.61})
    # then MLflow does not show a finished run for a stage that is not done
    assert store.get_run(run_id).info.status == "FAILED"


def test_a_dataset_import_whose_run_cannot_be_ended_is_not_marked_done(
    store, tmp_path, monkeypatch
):
    from instructflow.tasks import dataset_stage
    from instructflow.tasks.dataset import DatasetConfig
    from instructflow.tasks.stage import DONE_MARKER

    # given a user's dataset imported (here: what the import found, without the reading)
    summary = {
        "split_rule": "by user",
        "preference_shape": "pairwise",
        "rendering": "chat template",
        "sft_source": "chosen",
        "tables": {"preferences": {"md5": "0" * 32, "file": "preferences.jsonl", "rows": 4}},
        "split_counts": {},
        "k_counts": {},
    }
    found = {"summary": summary, "written": {}}
    monkeypatch.setattr(dataset_stage, "import_dataset", lambda *_args: found)
    # and a server that goes away for good as the stage's run is ended
    server = Server(monkeypatch)
    monkeypatch.setattr(outages, "OUTAGE_WAIT_SECONDS", 0.05)
    server.lost_as_a_run_ends = True
    out = tmp_path / "out"
    with pytest.raises(MlflowException, match="Connection refused"):
        dataset_stage.import_dataset_task.fn(
            str(tmp_path), "base", DatasetConfig(), 16, out_dir=str(out), parent_run_id=None
        )
    # then the stage is not marked done: no finished folder a retry would take for cached
    assert not (out / DONE_MARKER).exists()


def test_a_signal_as_a_stage_is_marked_done_kills_its_run_not_the_pipelines(
    store, tmp_path, monkeypatch
):
    import mlflow

    # given Ctrl-C as the stage writes its done marker, its own run already ended
    def interrupted(_out, _result):
        raise KeyboardInterrupt

    monkeypatch.setattr(tracking, "mark_done", interrupted)
    tracking.setup()
    with mlflow.start_run() as parent:
        with pytest.raises(KeyboardInterrupt):
            with tracked_stage("judge", tmp_path / "out", parent.info.run_id, {}) as stage:
                run_id = stage.run.info.run_id
                stage.done({"judge/accuracy": 0.61})
        # then the stage's run is KILLED and the pipeline's run goes on
        assert mlflow.active_run().info.run_id == parent.info.run_id
        assert store.get_run(parent.info.run_id).info.status == "RUNNING"
    assert store.get_run(run_id).info.status == "KILLED"


# --- the same with a real MLflow server, stopped and started again mid-stage -----------------


def _start_server(db, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += ["--default-artifact-root", str(db.parent / "artifacts")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
            return process
        except OSError:
            time.sleep(0.25)
    process.kill()
    raise RuntimeError("the MLflow server did not start in 90 s")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=30)


@pytest.mark.slow
def test_a_tracking_server_restarted_mid_stage_loses_no_step_and_no_work(tmp_path, monkeypatch):
    port, db = free_port(), tmp_path / "server" / "mlflow.db"
    db.parent.mkdir()
    server, restarted = _start_server(db, port), []
    try:
        uri = f"http://127.0.0.1:{port}"
        use_project(monkeypatch, tmp_path)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        import mlflow

        mlflow.set_tracking_uri(uri)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # lost at once, not in 15 s
        monkeypatch.setattr(tracking.BatchedLog, "FLUSH_SECONDS", 0.0)
        monkeypatch.setattr(tracking.BatchedLog, "RETRY_SECONDS", 0.2)
        with tracked_stage("sft", tmp_path / "out", None, {"lr": 0.001}) as stage:
            for step in range(6):
                if step == 3:
                    _stop(server)
                tracking.log_step_metrics({"sft/loss": float(step)}, step)
            # the server comes back while the stage's end waits for it
            threading.Thread(target=lambda: restarted.append(_start_server(db, port))).start()
            result = stage.done({"sft/final": 1.0})
        client = MlflowClient(uri)
        curve = _curve(client, result["mlflow_run_id"], "sft/loss")
        assert curve == [(s, float(s)) for s in range(6)]
        assert client.get_run(result["mlflow_run_id"]).info.status == "FINISHED"
    finally:
        for process in [server, *restarted]:
            _stop(process)


def test_a_server_lost_between_two_stages_is_waited_for_before_the_next_starts(
    store, monkeypatch, capsys
):
    # given the server gone (a restart) when a stage is about to start its run
    server = Server(monkeypatch)
    monkeypatch.setattr(outages, "OUTAGE_WAIT_SECONDS", 60.0)
    server.down, server.back_after_probes = True, 3
    # then the stage's run starts once it answers again, after saying what waits for it
    with tracking.stage_run("reward_model", None) as run:
        pass
    assert server.probes == 3 and store.get_run(run.info.run_id).info.status == "FINISHED"
    assert "stage reward_model starts its run there" in capsys.readouterr().out


def test_a_finished_runs_report_waits_for_its_lost_server_before_it_is_logged(
    store, tmp_path, monkeypatch
):
    import mlflow

    from instructflow.tasks import report

    server = Server(monkeypatch)
    monkeypatch.setattr(outages, "OUTAGE_WAIT_SECONDS", 60.0)
    folder = tmp_path / "reports" / "run"
    folder.mkdir(parents=True)
    (folder / "report.json").write_text("{}")
    tracking.setup()
    with mlflow.start_run() as run:
        # given the server gone (a restart) as the finished run logs its report
        server.down, server.back_after_probes = True, server.probes + 2
        report.log_report(folder, report.empty_report({"mlflow_run_id": run.info.run_id}), "", [])
    # then the report was logged once it answered
    assert server.probes >= 2
    logged = {a.path for a in store.list_artifacts(run.info.run_id, "report")}
    assert logged == {"report/report.json", "report/report.md"}


def _data_stage_losing_its_server(monkeypatch, back_after: int | None) -> Server:
    """A tracking server that goes away as the data stage ends its run (after its last
    write, the tables), back after `back_after` more probes or never."""
    tracking.setup()
    server = Server(monkeypatch)
    monkeypatch.setattr(outages, "OUTAGE_WAIT_SECONDS", 60.0 if back_after else 0.05)
    real = tracking.log_tables

    def log_then_lose(*args, **kwargs):
        real(*args, **kwargs)
        server.lost_as_a_run_ends = True
        if back_after is not None:
            server.back_after_probes = server.probes + back_after

    monkeypatch.setattr(tracking, "log_tables", log_then_lose)
    return server


def _run_data_stage(generated_root, out, parent_run_id: str) -> dict:
    from instructflow.tasks import data

    profile_dir = str(generated_root / "data" / "smoke")
    return data.validate_data_task.fn(profile_dir, "abc.dir", str(out), parent_run_id)


def test_the_data_stage_waits_for_a_server_lost_as_its_run_ends_then_is_done(
    store, generated_root, tmp_path, monkeypatch
):
    from instructflow.tasks.stage import is_done

    # given a tracking server that goes away as the data stage ends its run, back soon after
    _data_stage_losing_its_server(monkeypatch, back_after=2)
    out = tmp_path / "runs" / "data"
    # when the stage runs
    with mlflow.start_run() as parent:
        result = _run_data_stage(generated_root, out, parent.info.run_id)
    # then its end waited: the run is FINISHED and the stage done
    assert store.get_run(result["mlflow_run_id"]).info.status == "FINISHED"
    assert is_done(out)


def test_a_data_stage_whose_run_cannot_be_ended_is_not_marked_done(
    store, generated_root, tmp_path, monkeypatch
):
    # given a tracking server that goes away for good as the data stage ends its run
    server = _data_stage_losing_its_server(monkeypatch, back_after=None)
    out = tmp_path / "runs" / "data"
    # when the stage runs, it fails
    with mlflow.start_run() as parent:
        with pytest.raises(MlflowException, match="Connection refused"):
            _run_data_stage(generated_root, out, parent.info.run_id)
        server.down = False  # back, for this test's own parent run to end
    # and it is not marked done: its retry runs it again
    assert not (out / "DONE.json").exists()
