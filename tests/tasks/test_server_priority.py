"""The ephemeral Prefect server, a child of the run, is lowered to the lowest priority; other children are not."""

import os
import subprocess
import sys
import time
from pathlib import Path

from instructflow.tasks import leftovers, server_priority


def sleeper(*extra: str, ephemeral: bool) -> subprocess.Popen:
    """A child process whose command line ends with `extra` (as uvicorn's names its app) and
    whose environment marks it as Prefect's ephemeral server, or not."""
    env = dict(os.environ, PREFECT__SERVER_EPHEMERAL="1" if ephemeral else "0")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *extra], env=env)
    # Popen can return before the kernel has set the new program's command line up (an exec
    # after vfork wakes the parent first): /proc shows it empty for a moment, on a busy
    # machine long enough for the scan to miss it. A real server is scanned seconds later.
    cmdline = Path(f"/proc/{child.pid}/cmdline")
    deadline = time.monotonic() + 10
    while extra[-1].encode() not in cmdline.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    return child


def test_only_the_child_that_runs_prefects_server_app_is_lowered() -> None:
    app = leftovers.EPHEMERAL_APP.decode()
    server = sleeper("--app", app, "--lifespan", "on", ephemeral=True)
    other = sleeper("--app", "something.else:create_app", ephemeral=False)
    try:
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        assert leftovers.ephemeral_servers(None).get(server.pid) == os.getpid()
        lowered = server_priority.yield_to_training()
        # (a real temporary server an earlier test in this process started may be lowered too)
        assert server.pid in lowered and other.pid not in lowered
        assert os.getpriority(os.PRIO_PROCESS, server.pid) == server_priority.LOWEST_PRIORITY
        assert os.getpriority(os.PRIO_PROCESS, other.pid) == ours
    finally:
        for child in (server, other):
            child.kill()
            child.wait()
