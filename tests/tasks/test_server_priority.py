"""The ephemeral Prefect server, a child of the run, is lowered to the lowest priority; other children are not."""

import os
import subprocess
import sys

from instructflow.tasks import server_priority


def sleeper(*extra: str) -> subprocess.Popen:
    """A child process whose command line ends with `extra` (as uvicorn's names its app)."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *extra])


def test_only_the_child_that_runs_prefects_server_app_is_lowered() -> None:
    server = sleeper("--app", server_priority.SERVER_APP, "--lifespan", "on")
    other = sleeper("--app", "something.else:create_app")
    try:
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        assert server.pid in server_priority.children()
        lowered = server_priority.yield_to_training()
        # (a real temporary server an earlier test in this process started may be lowered too)
        assert server.pid in lowered and other.pid not in lowered
        assert os.getpriority(os.PRIO_PROCESS, server.pid) == server_priority.LOWEST_PRIORITY
        assert os.getpriority(os.PRIO_PROCESS, other.pid) == ours
    finally:
        for child in (server, other):
            child.kill()
            child.wait()


def test_children_reads_parent_pids_past_names_with_spaces_and_parens(tmp_path) -> None:
    me = os.getpid()
    for pid, name, ppid, cmd in (
        (101, "uvicorn (x) y", me, b"python\0-m\0uvicorn\0" + server_priority.SERVER_APP.encode()),
        (102, "other", me + 1, b"python\0x"),
    ):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(f"{pid} ({name}) S {ppid} 1 1 0")
        (tmp_path / str(pid) / "cmdline").write_bytes(cmd)
    assert server_priority.children(tmp_path) == {
        101: "python -m uvicorn " + server_priority.SERVER_APP
    }
