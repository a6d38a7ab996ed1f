"""The services scripts/serve.sh starts answer SIGINT. A background job of a script starts
with SIGINT ignored, and Python keeps it ignored: the Prefect worker answers SIGTERM by
sending itself SIGINT, so a plain `kill` of the worker left it running, taking flow runs."""

import os
import signal
import sys
import time
from pathlib import Path

from tests.scripts.serve_start import run_start


def _start(state: Path, name: str, *command: str) -> int:
    """serve.sh's own `start` function, run on its own; the PID it wrote."""
    run_start(state, name, *command)
    return int((state / f"{name}.pid").read_text())


def _ended_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_a_started_python_service_stops_on_sigint(tmp_path):
    # given a Python program started as serve.sh starts its services
    pid = _start(tmp_path, "probe", sys.executable, "-c", "import time; time.sleep(60)")
    try:
        time.sleep(1)  # past the exec, into Python
        # when it gets SIGINT (what the worker sends itself on SIGTERM)
        os.kill(pid, signal.SIGINT)
        # then it stops
        assert _ended_within(pid, 10), (tmp_path / "probe.log").read_text()
    finally:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
