"""A command run while `make serve` is up uses its servers (instructflow.tasks.served_stack).

`make serve` is faked: PID files in .serve/ naming a live process whose command line
is the server's, the served-at.url files scripts/serve.sh leaves beside the stores,
and a tiny HTTP server on a free loopback port answering /health and /api/health.
"""

import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from instructflow.flows import cli, cli_run
from instructflow.tasks.served_stack import command_line, use_served_stack


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802  (http.server's name)
        self.send_response(200 if self.path in ("/health", "/api/health") else 404)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):  # quiet
        pass


class FakeServe:
    """What `make serve` leaves in a project root, with servers that answer or not."""

    def __init__(self, root: Path):
        self.root, self.prefect_home = root, root / ".prefect"
        self.processes: list[subprocess.Popen] = []
        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def serve(self, pid_file: str, command: str, store: Path, url: str | None = None) -> int:
        """A live process running `command` named by .serve/`pid_file`; `store` served at `url`."""
        process = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(120)", *command.split()]
        )
        self.processes.append(process)
        # Right after the exec its command line reads empty for a moment.
        while command not in command_line(process.pid):
            time.sleep(0.01)
        (self.root / ".serve").mkdir(exist_ok=True)
        (self.root / ".serve" / pid_file).write_text(f"{process.pid}\n")
        store.mkdir(parents=True, exist_ok=True)
        (store / "served-at.url").write_text(f"{url or self.url}\n")
        return process.pid

    def serve_both(self) -> None:
        self.serve("prefect-server.pid", "prefect server start", self.prefect_home)
        self.serve("mlflow.pid", "mlflow server", self.root / "mlflow")

    def close(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait()
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def fake_serve(tmp_path, monkeypatch):
    root = tmp_path / "project"
    root.mkdir()
    (root / "data.dvc").write_text("outs: []\n")
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(root))
    monkeypatch.setenv("PREFECT_HOME", str(root / ".prefect"))
    stack = FakeServe(root)
    yield stack
    stack.close()


def _environ(stack: FakeServe, **exported: str) -> dict[str, str]:
    return {"PREFECT_HOME": str(stack.prefect_home), **exported}


def test_a_run_uses_the_servers_make_serve_started_and_says_so(fake_serve):
    # given `make serve` up on this project's stores
    fake_serve.serve_both()
    environ, said = _environ(fake_serve), []
    # when a command looks for them
    added = use_served_stack(environ, said.append)
    # then Prefect's client and MLflow point at them, not at a server or store of the run's own
    assert environ["PREFECT_API_URL"] == f"{fake_serve.url}/api"
    assert environ["MLFLOW_TRACKING_URI"] == fake_serve.url
    assert set(added) == {"PREFECT_API_URL", "MLFLOW_TRACKING_URI"}
    # and one line says so, naming both
    assert len(said) == 1 and "make serve" in said[0]
    assert f"Prefect {fake_serve.url}" in said[0] and f"MLflow {fake_serve.url}" in said[0]


def test_what_you_exported_wins(fake_serve):
    # given `make serve` up, and a Prefect API and a tracking URI of your own
    fake_serve.serve_both()
    mine = {"PREFECT_API_URL": "http://elsewhere:4200/api", "MLFLOW_TRACKING_URI": "sqlite:///x"}
    environ, said = _environ(fake_serve, **mine), []
    # then nothing changes and nothing is said
    assert use_served_stack(environ, said.append) == {}
    assert environ | mine == environ and said == []


def test_without_make_serve_a_run_does_as_before(fake_serve):
    # given no .serve/ at all, but the served-at.url files a `make serve` once left
    for store in (fake_serve.prefect_home, fake_serve.root / "mlflow"):
        store.mkdir(parents=True)
        (store / "served-at.url").write_text(f"{fake_serve.url}\n")
    environ, said = _environ(fake_serve), []
    # then the run keeps its temporary Prefect server and the SQLite store, silently
    assert use_served_stack(environ, said.append) == {}
    assert "PREFECT_API_URL" not in environ and said == []


def test_a_stale_pid_file_is_not_a_served_stack(fake_serve):
    # given PID files of processes that are gone, or that run something else now
    fake_serve.serve_both()
    for process in fake_serve.processes:
        process.kill()
        process.wait()
    serve = fake_serve.root / ".serve"
    (serve / "prefect-server.pid").write_text(f"{os.getpid()}\n")  # this test: no Prefect server
    environ, said = _environ(fake_serve), []
    # then nothing is pointed at them
    assert use_served_stack(environ, said.append) == {} and said == []


def test_a_served_server_that_does_not_answer_is_left_alone_in_one_line(fake_serve):
    # given make serve's Prefect process alive, but nothing answering where it says it serves
    closed = socket_free_port()
    pid = fake_serve.serve(
        "prefect-server.pid", "prefect server start", fake_serve.prefect_home, closed
    )
    environ, said = _environ(fake_serve), []
    # then the run does without it, and says why
    assert use_served_stack(environ, said.append) == {}
    assert len(said) == 1 and f"pid {pid}" in said[0] and closed in said[0]


def test_a_store_served_elsewhere_is_not_ours(fake_serve, tmp_path):
    # given make serve up, but showing another Prefect home than the one this run uses
    fake_serve.serve_both()
    environ = {"PREFECT_HOME": str(tmp_path / "another-home")}
    # then only MLflow (this project's store) is taken from it
    assert set(use_served_stack(environ, lambda line: None)) == {"MLFLOW_TRACKING_URI"}


def test_the_command_line_points_a_run_at_the_served_stack(fake_serve, monkeypatch):
    # given make serve up and nothing exported for Prefect or MLflow
    fake_serve.serve_both()
    monkeypatch.setenv("PREFECT_API_URL", "")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    seen = {}

    def run(args):
        seen.update(os.environ)
        return 0

    monkeypatch.setattr(cli_run, "_cmd_run", run)
    # when `instructflow run` starts
    assert cli.main(["run", "--profile", "smoke"]) == 0
    # then the run sees the served stack's addresses, as Prefect will when it is imported
    assert seen["PREFECT_API_URL"] == f"{fake_serve.url}/api"
    assert seen["MLFLOW_TRACKING_URI"] == fake_serve.url


def socket_free_port() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"
