"""A flow run outlives the worker that started it (tasks/worker_exit.py).

A stand-in worker starts a child with stdout and stderr piped to it and copies them to
its log file, as Prefect's process worker does; then it is killed with SIGKILL. The
child prints, logs and writes through rich (Prefect's console handler, which answered
a broken pipe with SystemExit(1)) after that, and must finish, its lines in the log.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="procfs and pidfd: Linux")

CHILD = textwrap.dedent(
    """
    import logging, os, sys, time
    from pathlib import Path
    from rich.console import Console
    from instructflow.tasks import worker_exit

    out = Path(sys.argv[1])
    guarded = sys.argv[2] == "guard" and worker_exit.outlive_worker()
    print("child ready", os.getpid(), guarded, flush=True)
    (out / "ready").write_text(f"{os.getpid()} {guarded}")
    parent = os.getppid()
    while os.getppid() == parent:  # until the worker is killed
        time.sleep(0.05)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    console = Console(file=sys.stderr)
    for i in range(2000):  # far more than a pipe holds (64 KiB)
        print(f"printed line {i} " + "x" * 40, flush=True)
        logging.info("logged line %d", i)
        console.print(f"rich line {i}")
    (out / "done").write_text("ok")
    """
)

WORKER = textwrap.dedent(
    """
    import subprocess, sys, threading
    child = subprocess.Popen(
        [sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3]],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    def copy(stream):
        for line in stream:
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
    threads = [threading.Thread(target=copy, args=(s,)) for s in (child.stdout, child.stderr)]
    for t in threads:
        t.start()
    child.wait()
    """
)


def _run(tmp_path: Path, mode: str, worker_log: str = "worker.log") -> tuple[Path, Path]:
    """Kill the stand-in worker once the child runs; (the child's done file, the worker's log)."""
    log = tmp_path / worker_log
    env = os.environ | {"PREFECT__FLOW_RUN_ID": "run-1", "INSTRUCTFLOW_ROOT": str(tmp_path)}
    with open(os.devnull if worker_log == os.devnull else log, "ab") as out:
        worker = subprocess.Popen(
            [sys.executable, "-c", WORKER, CHILD, str(tmp_path), mode],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    child = None
    try:
        deadline = time.monotonic() + 60
        ready = tmp_path / "ready"
        while child is None and worker.poll() is None and time.monotonic() < deadline:
            if ready.exists() and ready.read_text():
                child = int(ready.read_text().split()[0])
            time.sleep(0.1)
        assert child is not None, "the child did not start"
        worker.kill()
        worker.wait()
        done = tmp_path / "done"
        deadline = time.monotonic() + 60
        while not done.exists() and _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        return done, log
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


def test_the_run_goes_on_after_its_worker_is_killed_and_its_output_stays_in_the_worker_log(
    tmp_path,
):
    done, log = _run(tmp_path, "guard")
    assert done.exists(), log.read_text()[-2000:]
    assert (tmp_path / "ready").read_text().endswith("True")
    text = log.read_text()
    for line in ("child ready", "printed line 1999", "logged line 1999", "rich line 1999"):
        assert line in text


def test_a_worker_that_logs_nowhere_leaves_the_run_a_file_under_runs(tmp_path):
    done, _ = _run(tmp_path, "guard", worker_log=os.devnull)
    assert done.exists()
    text = (tmp_path / "runs" / ".console" / "run-1.log").read_text()
    assert "printed line 1999" in text and "rich line 1999" in text


def test_without_the_guard_the_broken_pipe_ends_the_run(tmp_path):
    """What the guard prevents (rich's SystemExit(1), or BrokenPipeError on print)."""
    done, log = _run(tmp_path, "none")
    assert not done.exists()


class _FakeClient:
    """Prefect's sync client as worker_exit uses it: the flow run's states in turn (`states`,
    popped), and the states set on it recorded in `set_states`."""

    def __init__(self, states: list, set_states: list):
        self.states, self.set_states = states, set_states

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def read_flow_run(self, flow_run_id):
        return type("FlowRun", (), {"state": self.states.pop(0)})

    def set_flow_run_state(self, flow_run_id, state, force=False):
        self.set_states.append((flow_run_id, state.type.value, force))


def test_an_orphaned_run_stops_itself_on_a_cancel_as_its_worker_would(monkeypatch):
    """No worker is left to send the SIGTERM of a cancel: the run sends it to itself."""
    import prefect.client.orchestration
    from prefect.states import Cancelling, Running

    from instructflow.tasks import worker_exit

    states = [Running(), Running(), Cancelling()]
    sent = []

    monkeypatch.setattr(
        prefect.client.orchestration, "get_client", lambda **_: _FakeClient(states, [])
    )
    monkeypatch.setattr(worker_exit, "CANCEL_POLL_SECONDS", 0.01)
    monkeypatch.setattr(worker_exit.os, "kill", lambda pid, sig: sent.append((pid, sig)))
    monkeypatch.setattr(worker_exit, "_mark_cancelled_after_exit", lambda run_id: None)
    monkeypatch.setattr(worker_exit.interrupts, "_cancel_seen", [])
    monkeypatch.setattr(worker_exit.interrupts, "received", [signal.SIGTERM])  # what kill brings
    assert not worker_exit.interrupts.cancelled_worker_run()  # a SIGTERM alone: someone's kill
    worker_exit._stop_when_cancelled(uuid.uuid4())
    assert sent == [(os.getpid(), signal.SIGTERM)] and states == []
    assert worker_exit.interrupts.cancelled_worker_run()  # the report says it was a cancel


def test_an_orphaned_run_stopped_by_a_cancel_ends_cancelled_not_crashed(monkeypatch):
    """Prefect's engine reports the SIGTERM as Crashed and dies by it: a process started
    before the SIGTERM marks the flow run Cancelled once the run's process is gone."""
    import prefect.client.orchestration
    from prefect.states import Cancelling, Crashed

    from instructflow.tasks import worker_exit

    states = [Cancelling(), Crashed()]  # at the poll; after the exit, as the engine left it
    started, set_states = [], []

    monkeypatch.setattr(
        prefect.client.orchestration, "get_client", lambda **_: _FakeClient(states, set_states)
    )
    monkeypatch.setattr(worker_exit, "CANCEL_POLL_SECONDS", 0.01)
    monkeypatch.setattr(worker_exit.os, "kill", lambda pid, sig: None)
    monkeypatch.setattr(worker_exit.subprocess, "Popen", lambda args, **kw: started.append(args))
    run_id = uuid.uuid4()
    worker_exit._stop_when_cancelled(run_id)
    assert set_states == []  # nothing marked while the run stops
    [command] = started
    assert command[1:] == ["-m", "instructflow.tasks.worker_exit", str(os.getpid()), str(run_id)]
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):  # the worker's server
        worker_exit._mark_cancelled(run_id)  # what that process does once this one has exited
    assert set_states == [(run_id, "CANCELLED", True)]


def test_the_marking_process_waits_for_the_run_to_exit(tmp_path):
    """`python -m instructflow.tasks.worker_exit PID RUN_ID` returns only after PID exits."""
    run = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
    env = os.environ | {"PREFECT_API_URL": "http://127.0.0.1:9/api"}  # away: nothing to mark
    started = time.monotonic()
    marker = subprocess.run(
        [sys.executable, "-m", "instructflow.tasks.worker_exit", str(run.pid), str(uuid.uuid4())],
        env=env,
        timeout=120,
    )
    assert marker.returncode == 0 and run.poll() is not None
    assert time.monotonic() - started >= 2


def test_a_command_line_run_against_a_server_watches_for_a_cancel(monkeypatch):
    """`instructflow run` with PREFECT_API_URL: no worker would pass a cancel on (a tester's
    run cancelled while paused for approval waited out its timeout and ended Completed)."""
    from instructflow.tasks import worker_exit

    watched = []
    monkeypatch.setattr(worker_exit, "_stop_when_cancelled", watched.append)
    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    run_id = uuid.uuid4()
    assert not worker_exit.stop_on_cancel(run_id)  # a temporary server: no UI to cancel from
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert worker_exit.stop_on_cancel(run_id)
    deadline = time.monotonic() + 10
    while not watched and time.monotonic() < deadline:
        time.sleep(0.01)
    assert watched == [run_id]
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", str(run_id))  # a worker's: its worker cancels
    assert not worker_exit.stop_on_cancel(run_id)


def test_a_command_line_run_against_a_server_named_in_the_prefect_profile_watches_too(
    monkeypatch,
):
    from prefect.context import use_profile
    from prefect.settings import PREFECT_API_URL, Profile

    from instructflow.tasks import worker_exit

    monkeypatch.setattr(worker_exit, "_stop_when_cancelled", lambda _: None)
    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    served = Profile(name="served", settings={PREFECT_API_URL: "http://127.0.0.1:4200/api"})
    with use_profile(served, include_current_context=False):  # `prefect config set`
        assert worker_exit.stop_on_cancel(uuid.uuid4())


def test_the_cancel_watch_asks_the_server_of_the_flow_that_started_it(monkeypatch):
    """A sweep's seed names its server only in the flow's settings (PREFECT_API_URL came after
    Prefect loaded the process's own): a watcher thread on those started a server of its own."""
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    from instructflow.tasks import worker_exit

    asked = []
    monkeypatch.setattr(
        worker_exit, "_stop_when_cancelled", lambda _: asked.append(get_current_settings().api.url)
    )
    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):  # the flow's
        assert worker_exit.stop_on_cancel(uuid.uuid4())
    deadline = time.monotonic() + 10
    while not asked and time.monotonic() < deadline:
        time.sleep(0.01)
    assert asked == ["http://127.0.0.1:9/api"]


def test_the_cancel_watch_ends_with_the_flow_run(monkeypatch):
    import prefect.client.orchestration
    from prefect.states import Completed, Running

    from instructflow.tasks import worker_exit

    states, sent = [Running(), Completed()], []
    monkeypatch.setattr(
        prefect.client.orchestration, "get_client", lambda **_: _FakeClient(states, [])
    )
    monkeypatch.setattr(worker_exit, "CANCEL_POLL_SECONDS", 0.01)
    monkeypatch.setattr(worker_exit.os, "kill", lambda pid, sig: sent.append((pid, sig)))
    worker_exit._stop_when_cancelled(uuid.uuid4())  # returns: the run is over
    assert sent == [] and states == []


def test_the_cancel_watch_finding_the_server_away_notes_it_lost(monkeypatch):
    """A poll that fails tells a command-line run that Prefect's server was lost, also while
    no stage waited for it: its flow's end then reads its task runs back (task_run_states)."""
    import httpx
    import prefect.client.orchestration
    from prefect.states import Completed

    from instructflow.tasks import outages, worker_exit

    class Away(_FakeClient):
        def read_flow_run(self, flow_run_id):
            if len(self.states) == 2:  # the first poll: the server restarting
                self.states.pop(0)
                raise httpx.ConnectError("[Errno 111] Connection refused")
            return super().read_flow_run(flow_run_id)

    states = ["away", Completed()]
    monkeypatch.setattr(prefect.client.orchestration, "get_client", lambda **_: Away(states, []))
    monkeypatch.setattr(worker_exit, "CANCEL_POLL_SECONDS", 0.01)
    started = time.time()
    worker_exit._stop_when_cancelled(uuid.uuid4())
    assert states == [] and outages.prefect_api_lost_since(started)
