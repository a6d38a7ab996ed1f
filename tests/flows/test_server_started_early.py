"""`instructflow run` starts Prefect's temporary server while it imports and checks its inputs
(tasks/temporary_server.start_early): a run that ends before its flow stops that server too."""

import signal
import time

import pytest
from prefect.server.api import server as prefect_server
from prefect.settings import PREFECT_API_URL, temporary_settings

from instructflow.tasks import temporary_server
from instructflow.tasks.leftovers import ephemeral_servers
from tests.conftest import cli_env, cli_output, flip_one_byte, start_cli
from tests.flows.test_faults import session_processes


def ephemeral_env(root) -> dict[str, str]:
    """A CLI environment with Prefect's temporary server (no PREFECT_API_URL)."""
    return {k: v for k, v in cli_env(root).items() if k != "PREFECT_API_URL"}


def wait_for_server(proc, home: str, timeout: float = 120) -> bool:
    """Whether a temporary server of `home` appeared before `proc` ended (polled)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if ephemeral_servers(home):
            return True
        time.sleep(0.05)
    return False


def test_a_refused_run_stops_the_server_it_started_early_without_a_word(make_project, fast_smoke):
    # given a project whose data no longer matches data.dvc (refused before the flow)
    root = make_project()
    flip_one_byte(root / "data" / "smoke" / "sft" / "train.jsonl")
    # when a run is started with Prefect's temporary server
    proc = start_cli(root, fast_smoke(), ephemeral_env(root))
    started = wait_for_server(proc, str(root / ".prefect"))
    output = cli_output(proc, 180)
    # then it is refused, having started the server beside its checks
    assert proc.returncode == 2, output[-3000:]
    assert "refused before training" in output and "Beginning flow run" not in output
    assert started, "no temporary server was started beside the checks"
    # and the server is gone, and the refusal says nothing of it (no run had started)
    assert "temporary server" not in output, output[-3000:]
    assert ephemeral_servers(str(root / ".prefect")) == {}
    assert session_processes(proc.pid) == []


def test_a_bad_setting_is_refused_before_the_early_server_starts(make_project, fast_smoke):
    # given a setting out of its range (the settings are built before the server starts:
    # they import no stage library, so the line comes in a second or two)
    root = make_project()
    proc = start_cli(root, fast_smoke(ppo={"lr": -1}), ephemeral_env(root))
    started = wait_for_server(proc, str(root / ".prefect"))
    output = cli_output(proc, 180)
    # then the setting's line is all there is, no server was started, and none is left
    assert proc.returncode == 2, output[-3000:]
    assert "ppo.lr = -1 is not allowed" in output
    assert not started, "a temporary server was started for a run refused by its settings"
    assert "temporary server" not in output, output[-3000:]
    assert ephemeral_servers(str(root / ".prefect")) == {}
    assert session_processes(proc.pid) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_before_the_flow_stops_the_run_and_its_early_server(sig, make_project, fast_smoke):
    # given a run whose temporary server is up while the run is still importing and checking
    # (started as in the background: SIGINT ignored, which the run must undo itself)
    # when the signal reaches the run (Python's default for SIGTERM would end it at once,
    # exit handlers unrun). The window between the server's start and the flow's is a few
    # seconds, and a busy machine can let the flow begin before the poll sees the server:
    # then that run says nothing of this case, and a new one is tried (three at most).
    for _ in range(3):
        root = make_project()
        proc = start_cli(root, fast_smoke(), ephemeral_env(root))
        home = str(root / ".prefect")
        assert wait_for_server(proc, home), "no temporary server was started"
        proc.send_signal(sig)
        output = cli_output(proc, 60)
        if "Beginning flow run" not in output:
            break
    # then it stopped before its flow, saying so, and stopped the server on its way out
    assert "Beginning flow run" not in output, "the signal came after the flow began, 3 times"
    assert proc.returncode == 128 + sig, output[-3000:]
    name = signal.Signals(sig).name
    assert f"instructflow: interrupted by {name} before the flow started: no stage ran" in output
    assert ephemeral_servers(home) == {}
    assert session_processes(proc.pid) == []


@pytest.fixture
def no_server_instances(monkeypatch):
    """Prefect's table of temporary servers, emptied for the test and restored after it."""
    monkeypatch.setattr(prefect_server.SubprocessASGIServer, "_instances", {})
    return prefect_server.SubprocessASGIServer._instances


def test_nothing_is_started_where_a_prefect_api_url_is_set(no_server_instances):
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        server = temporary_server.start_early()
        server.ready()
        server.discard()
    assert no_server_instances == {}


def test_a_server_that_fails_to_start_fails_the_run_at_ready(no_server_instances, monkeypatch):
    # given a temporary server whose start fails (in start_early's thread)
    def failing_start(_server, timeout=None):
        raise RuntimeError("Timed out while attempting to connect")

    monkeypatch.setattr(temporary_server, "prepare", lambda: None)
    monkeypatch.setattr(prefect_server.SubprocessASGIServer, "start", failing_start)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        server = temporary_server.start_early()
        # then the run's thread gets that error when it asks for the server
        with pytest.raises(RuntimeError, match="Timed out"):
            server.ready()


def test_a_signal_while_the_import_lock_is_held_is_raised_once_it_is_free(monkeypatch):
    import _imp
    import os
    import time

    from instructflow.tasks import interrupts

    # (raised inside importlib's own code, it left Python's import lock held for good: the
    # thread starting the server then waited on it, and the run on that thread, for good)
    monkeypatch.setattr(interrupts, "received", [])
    held_through_the_signal = False
    with pytest.raises(interrupts.RunInterrupted, match="SIGTERM"):
        with interrupts.interrupt_before_flow():
            # given the import lock held (an import in progress) when the signal comes
            _imp.acquire_lock()
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.3)  # the handler runs here, and must not raise
                held_through_the_signal = True
            finally:
                _imp.release_lock()
            # then once the lock is free the run stops, within a retry's few milliseconds
            time.sleep(2)
    assert held_through_the_signal
