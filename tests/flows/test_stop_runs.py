"""`make stop` (scripts/stop.sh) with flow runs in progress: it names them, cancels them through
the Prefect API and waits for them to end before it stops the worker and the servers
(flows/stop_runs.py). Here against a stand-in Prefect API whose runs end as a cancelled run
does: Crashed first (Prefect's engine reports the SIGTERM so), Cancelled a little later."""

import contextlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from instructflow.flows import stop_runs

REPO = Path(__file__).resolve().parents[2]


class FakePrefect:
    """The flow runs a Prefect API holds; a cancelled run answers Crashed on the next
    `crashed_reads` reads of it, then Cancelled (never ends, with `never_ends`)."""

    def __init__(self, runs: dict[str, str], crashed_reads: int = 2, never_ends=(), refuses=()):
        self.states = {
            run_id: {"type": kind, "name": kind.title()} for run_id, kind in runs.items()
        }
        self.cancelled: dict[str, str] = {}  # run id -> the message it was cancelled with
        self.reads = {run_id: 0 for run_id in runs}
        self.crashed_reads, self.never_ends = crashed_reads, set(never_ends)
        self.refuses = set(refuses)  # runs whose set_state answers 500

    def run(self, run_id: str) -> dict:
        return {"id": run_id, "name": f"run-{run_id}", "state": self.states[run_id]}

    def filter(self, kinds: list[str]) -> list[dict]:
        return [self.run(i) for i, state in self.states.items() if state["type"] in kinds]

    def set_state(self, run_id: str, state: dict) -> None:
        self.cancelled[run_id] = state["message"]
        self.states[run_id] = {"type": state["type"], "name": state["name"]}

    def read(self, run_id: str) -> dict:
        if run_id in self.cancelled and run_id not in self.never_ends:
            self.reads[run_id] += 1
            ended = self.reads[run_id] > self.crashed_reads
            self.states[run_id] = (
                {"type": "CANCELLED", "name": "Cancelled"}
                if ended
                else {"type": "CRASHED", "name": "Crashed"}
            )
        return self.run(run_id)


def _handler(api: FakePrefect):
    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, body) -> None:
            data = json.dumps(body).encode()
            self.send_response(200 if body is not None else 201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            if self.path == "/api/flow_runs/filter":
                self._answer(api.filter(body["flow_runs"]["state"]["type"]["any_"]))
            elif self.path.split("/")[3] in api.refuses:  # /api/flow_runs/<id>/set_state
                self.send_error(500, "database is locked")
            else:
                api.set_state(self.path.split("/")[3], body["state"])
                self._answer({"status": "ACCEPT"})

        def do_GET(self) -> None:
            self._answer(api.read(self.path.split("/")[3]))

        def log_message(self, *args) -> None:
            pass

    return Handler


@pytest.fixture
def serve_api():
    servers = []

    def serve(api: FakePrefect) -> int:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield serve
    for server in servers:
        server.shutdown()


@pytest.fixture
def quick(monkeypatch):
    monkeypatch.setattr(stop_runs, "POLL_SECONDS", 0.01)
    monkeypatch.setattr(stop_runs, "CRASHED_GRACE_SECONDS", 0.3)


def test_runs_in_progress_are_named_cancelled_and_waited_for(serve_api, quick):
    # given a running, a paused and a completed flow run
    api = FakePrefect({"a": "RUNNING", "b": "PAUSED", "c": "COMPLETED"})
    port = serve_api(api)
    said: list[str] = []
    # when make stop asks the API
    with httpx.Client(base_url=f"http://127.0.0.1:{port}/api") as client:
        going = stop_runs.stop_runs(client, wait_s=30, say=said.append).going
    # then the two in progress were named and cancelled, the finished one left alone
    assert "run-a (a, Running)" in said[0] and "run-b (b, Paused)" in said[0]
    assert "run-c" not in said[0]
    assert set(api.cancelled) == {"a", "b"}
    assert all("make stop" in message for message in api.cancelled.values())
    # and each was waited for past its Crashed, to the Cancelled its worker sets
    assert {"flow run run-a ended Cancelled", "flow run run-b ended Cancelled"} <= set(said)
    assert going == []


def test_a_run_that_does_not_end_in_time_is_named_and_the_stop_goes_on(serve_api, quick):
    api = FakePrefect({"a": "RUNNING"}, never_ends={"a"})
    port = serve_api(api)
    said: list[str] = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}/api") as client:
        going = stop_runs.stop_runs(client, wait_s=0.2, say=said.append).going
    assert [run["id"] for run in going] == ["a"]
    assert said[-1].startswith("still running after 0 s: run-a (a, Running)")
    # and it says what becomes of it (the worker, which stops on SIGTERM, ends it)
    assert "Prefect's worker ends a run it started" in said[-1]


def test_nothing_in_progress_says_nothing(serve_api, quick):
    port = serve_api(FakePrefect({"c": "COMPLETED"}))
    said: list[str] = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}/api") as client:
        assert stop_runs.stop_runs(client, say=said.append) == stop_runs.Stopped([], [])
    assert said == []


def test_a_failed_cancel_is_named_and_the_other_runs_are_cancelled_still(serve_api, quick):
    # given three runs in progress, and an API that refuses to cancel the first
    api = FakePrefect({"a": "RUNNING", "b": "RUNNING", "c": "RUNNING"}, refuses={"a"})
    port = serve_api(api)
    said: list[str] = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}/api") as client:
        stopped = stop_runs.stop_runs(client, wait_s=30, say=said.append)
    # then the other two were cancelled and waited for
    assert set(api.cancelled) == {"b", "c"}
    assert {"flow run run-b ended Cancelled", "flow run run-c ended Cancelled"} <= set(said)
    # and the refused one is named, with the API's answer, in one line
    refused = [line for line in said if line.startswith("could not cancel")]
    assert len(refused) == 1 and "\n" not in refused[0]
    assert refused[0].startswith("could not cancel flow run run-a (a): 500 ")
    assert "database is locked" in refused[0]
    assert [run["id"] for run in stopped.failed] == ["a"] and stopped.going == []


def _stand_in_server(port: int) -> subprocess.Popen:
    """A process whose command line is the served Prefect server's, in a session of its own
    (as serve.sh starts it: stop.sh stops its process group)."""
    args = f"prefect server start --host 127.0.0.1 --port {port}"
    server = subprocess.Popen(["bash", "-c", f'exec -a "{args}" sleep 60'], start_new_session=True)
    # Reaped as soon as it ends: stop.sh waits while its process group has a process, a
    # zombie included.
    threading.Thread(target=server.wait, daemon=True).start()
    return server


def _make_stop(port: int, checkout: Path) -> subprocess.CompletedProcess:
    """scripts/stop.sh in a checkout whose .serve/ names a stand-in Prefect server on `port`."""
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "stop.sh", checkout / "scripts" / "stop.sh")
    (checkout / ".venv").symlink_to(REPO / ".venv")
    (checkout / ".serve").mkdir()
    server = _stand_in_server(port)
    try:
        (checkout / ".serve" / "prefect-server.pid").write_text(str(server.pid))
        return subprocess.run(
            ["bash", "scripts/stop.sh"], cwd=checkout, capture_output=True, text=True, timeout=120
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)


def test_make_stop_cancels_the_runs_in_progress_before_it_stops_the_servers(serve_api, tmp_path):
    # given make serve's state: a Prefect server (a stand-in, on a stand-in API) with a run
    api = FakePrefect({"a": "RUNNING"}, crashed_reads=0)
    port = serve_api(api)
    # when make stop runs
    stopped = _make_stop(port, tmp_path / "checkout")
    out = stopped.stdout + stopped.stderr
    # then it named the run and cancelled it, waited for it, then stopped the server
    assert "flow runs in progress: run-a (a, Running)" in out, out
    assert set(api.cancelled) == {"a"}
    assert out.index("flow run run-a ended Cancelled") < out.index("stopping prefect-server")
    assert stopped.returncode == 0, out


def test_make_stop_fails_after_stopping_everything_when_a_cancel_failed(serve_api, tmp_path):
    # given make serve's state with two runs, the first of which the API will not cancel
    api = FakePrefect({"a": "RUNNING", "b": "RUNNING"}, crashed_reads=0, refuses={"a"})
    port = serve_api(api)
    # when make stop runs
    stopped = _make_stop(port, tmp_path / "checkout")
    out = stopped.stdout + stopped.stderr
    # then the other run was cancelled, the server stopped anyway, and make stop failed
    assert set(api.cancelled) == {"b"}
    assert "could not cancel flow run run-a (a): 500" in out, out
    assert "stopping prefect-server" in out
    assert stopped.returncode != 0
