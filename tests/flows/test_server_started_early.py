"""`instructflow run` starts Prefect's temporary server while it imports and checks its inputs
(tasks/temporary_server.start_early): a run that ends before its flow stops that server too."""

import signal
import time

import pytest
from prefect.server.api import server as prefect_server
from prefect.settings import PREFECT_API_URL, temporary_settings

from instructflow.tasks import temporary_server
from instructflow.tasks.leftovers import ephemeral_servers
from tests.conftest import cli_env, flip_one_byte, start_cli
from tests.flows.test_faults import session_processes


def ephemeral_env(root) -> dict[str, str]:
    """A CLI environment with Prefect's temporary server (no PREFECT_API_URL)."""
    return {k: v for k, v in cli_env(root).items() if k != "PREFECT_API_URL"}


def test_a_refused_run_stops_the_server_it_started_early(make_project, fast_smoke):
    # given a project whose data no longer matches data.dvc (refused before the flow)
    root = make_project()
    flip_one_byte(root / "data" / "smoke" / "sft" / "train.jsonl")
    # when a run is started with Prefect's temporary server
    proc = start_cli(root, fast_smoke(), ephemeral_env(root))
    output, _ = proc.communicate(timeout=180)
    # then it is refused, having started the server beside its checks, and no server is left
    assert proc.returncode == 2, output[-3000:]
    assert "refused before training" in output
    assert "Starting temporary server on" in output and "Beginning flow run" not in output
    assert ephemeral_servers(str(root / ".prefect")) == {}
    assert session_processes(proc.pid) == []


def test_sigterm_before_the_flow_stops_the_server_started_early(make_project, fast_smoke):
    # given a run whose temporary server is up while the run is still importing and checking
    root = make_project()
    proc = start_cli(root, fast_smoke(), ephemeral_env(root))
    home = str(root / ".prefect")
    deadline = time.monotonic() + 120
    while not ephemeral_servers(home) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ephemeral_servers(home), "no temporary server was started"
    # when SIGTERM reaches the run (Python's default would end it at once, exit handlers unrun)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    # then it stopped before its flow, saying so, and stopped the server on its way out
    assert "Beginning flow run" not in output, "the signal came after the flow began"
    assert proc.returncode == 128 + signal.SIGTERM, output[-3000:]
    assert "instructflow: interrupted by SIGTERM" in output
    assert ephemeral_servers(home) == {}
    assert session_processes(proc.pid) == []


@pytest.fixture
def no_server_instances(monkeypatch):
    """Prefect's table of temporary servers, emptied for the test and restored after it."""
    monkeypatch.setattr(prefect_server.SubprocessASGIServer, "_instances", {})
    return prefect_server.SubprocessASGIServer._instances


def test_nothing_is_started_where_a_prefect_api_url_is_set(no_server_instances):
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        ready = temporary_server.start_early()
        ready()
    assert no_server_instances == {}


def test_a_server_that_fails_to_start_fails_the_run_at_ready(no_server_instances, monkeypatch):
    # given a temporary server whose start fails (in start_early's thread)
    def failing_start(_server, timeout=None):
        raise RuntimeError("Timed out while attempting to connect")

    monkeypatch.setattr(temporary_server, "prepare", lambda: None)
    monkeypatch.setattr(prefect_server.SubprocessASGIServer, "start", failing_start)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        ready = temporary_server.start_early()
        # then the run's thread gets that error when it asks for the server
        with pytest.raises(RuntimeError, match="Timed out"):
            ready()
