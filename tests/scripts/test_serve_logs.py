"""scripts/serve.sh keeps a restarted service's earlier log: after a worker that died
(kill -9, OOM) is started again, its last lines are what explain the failed flow runs."""

from pathlib import Path

from tests.scripts.serve_start import run_start


def _start(state: Path, name: str, *command: str) -> None:
    """serve.sh's own `start` function, run on its own with a stand-in command."""
    run_start(state, name, *command, wait=True)


def test_a_restarted_service_appends_to_its_log(tmp_path):
    _start(tmp_path, "worker", "echo", "first worker: flow run crashed here")
    _start(tmp_path, "worker", "echo", "second worker")

    log = (tmp_path / "worker.log").read_text()
    assert "first worker: flow run crashed here" in log
    assert log.index("first worker") < log.index("second worker")
