"""`make stop` (flows/stop_runs.py) and a deployment's flow run that never started, against a
real Prefect server of the module's own (runs other tests left in progress on a shared one
would be waited for): with no worker running, nothing would ever start the run or end its
Cancelling, so it is set Cancelled at once instead of waited for 120 s."""

import contextlib
import datetime
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from instructflow.flows import stop_runs
from tests.conftest import REPO_ROOT
from tests.live_stack import ask_prefect, free_port


def _stand_in(args: str) -> subprocess.Popen:
    """A process whose command line is `args` (what make serve's PID files are checked for)."""
    process = subprocess.Popen(
        ["bash", "-c", f'exec -a "{args}" sleep 300'], start_new_session=True
    )
    threading.Thread(target=process.wait, daemon=True).start()  # reaped as soon as it ends
    return process


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    """`prefect server start` on a free loopback port with a fresh database: (pid, API URL)."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    server = subprocess.Popen(
        [REPO_ROOT / ".venv/bin/prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 180
        while not _healthy(url):
            assert server.poll() is None and time.monotonic() < deadline, "no Prefect server"
            time.sleep(1)
        yield server.pid, url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def served_state(prefect_server, tmp_path: Path) -> Iterator[tuple[Path, httpx.Client]]:
    """make serve's .serve/ naming that Prefect server (no worker.pid), and a client of it."""
    pid, url = prefect_server
    state = tmp_path / ".serve"
    state.mkdir()
    (state / "prefect-server.pid").write_text(str(pid))
    with httpx.Client(base_url=url, timeout=30) as client:
        yield state, client


def _ask(client: httpx.Client, method: str, path: str, body: dict | None = None) -> dict:
    """The session's Prefect server's answer, asked again while it is busy (a CI run met a 503
    of its SQLite store here, read as a deployment without an id), any other error raised."""
    response = ask_prefect(client, method, path, json=body)
    response.raise_for_status()
    return response.json()


def _deployment_run(client: httpx.Client, state: dict | None = None) -> dict:
    """A new flow run of a deployment 'scheduled-retrain' (Scheduled now, or `state`)."""
    flow = _ask(client, "POST", "/flows/", {"name": "stop-runs-stranded"})
    deployment = _ask(
        client, "POST", "/deployments/", {"name": "scheduled-retrain", "flow_id": flow["id"]}
    )
    return _ask(
        client,
        "POST",
        f"/deployments/{deployment['id']}/create_flow_run",
        {"state": state} if state else {},
    )


def _scheduled_run(client: httpx.Client, due: datetime.datetime) -> str:
    """A run a schedule made, due at `due`, nothing has started."""
    details = {"scheduled_time": due.isoformat()}
    state = {"type": "SCHEDULED", "name": "Scheduled", "state_details": details}
    return _deployment_run(client, state)["id"]


def _pending_deployment_run(client: httpx.Client) -> str:
    """A deployment's flow run a worker claimed (Pending) and never started."""
    run = _deployment_run(client)
    pending = {"type": "PENDING", "name": "Pending"}
    _ask(client, "POST", f"/flow_runs/{run['id']}/set_state", {"state": pending})
    return run["id"]


def _state(client: httpx.Client, run_id: str) -> str:
    return _ask(client, "GET", f"/flow_runs/{run_id}")["state"]["type"]


def test_a_run_no_worker_can_start_is_cancelled_at_once(served_state, capsys):
    state, client = served_state
    # given a Pending deployment run, and no worker running (no worker.pid)
    run_id = _pending_deployment_run(client)
    # when make stop cancels the runs in progress
    started = time.monotonic()
    stop_runs.main([str(state)])
    took = time.monotonic() - started
    # then the run is Cancelled, without the wait for a run to end
    assert _state(client, run_id) == "CANCELLED"
    assert took < 20, f"make stop took {took:.0f} s"
    assert "had not started, and no worker runs to start it" in capsys.readouterr().out


def test_with_its_worker_running_a_pending_run_is_left_to_the_worker(
    served_state, monkeypatch, capsys
):
    state, client = served_state
    monkeypatch.setattr(stop_runs, "WAIT_SECONDS", 0.5)
    worker = _stand_in("prefect worker start --pool instructflow-process")
    (state / "worker.pid").write_text(str(worker.pid))
    try:
        # given a Pending deployment run, and make serve's worker up
        run_id = _pending_deployment_run(client)
        # when make stop cancels the runs in progress
        stop_runs.main([str(state)])
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
    # then it is Cancelling, for the worker to end (as a cancel from the UI), and waited for
    assert _state(client, run_id) == "CANCELLING"
    assert "still running after 0 s" in capsys.readouterr().out


def test_a_late_scheduled_run_is_cancelled_and_the_next_one_is_left_and_named(served_state, capsys):
    state, client = served_state
    now = datetime.datetime.now(datetime.UTC)
    # given a scheduled run that fell due two days ago, nothing started it, and the next one
    late = _scheduled_run(client, now - datetime.timedelta(days=2))
    upcoming = _scheduled_run(client, now + datetime.timedelta(days=3))
    # when make stop runs
    assert stop_runs.main([str(state)]) == 0
    out = capsys.readouterr().out
    # then the late one is Cancelled (the next make serve would start it at once), and named
    assert _state(client, late) == "CANCELLED"
    assert "cancelled 1 late scheduled run(s)" in out and f"({late}, scheduled-retrain, due" in out
    # and the schedule's next run is left as it is, and said, with what becomes of it
    assert _state(client, upcoming) == "SCHEDULED"
    assert "the next scheduled run is " in out and f"({upcoming}, scheduled-retrain, due" in out
    assert "the next make serve starts it" in out
