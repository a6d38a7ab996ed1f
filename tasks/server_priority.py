"""Prefect's ephemeral server gives way to training for the cores.

With PREFECT_API_URL unset, Prefect runs its server as a child process of the
run. Its work is bookkeeping that nothing waits for: it records the task runs'
state events and the logs the run sends. At normal priority that work preempts
the training threads, which keep every core busy: on the 2-core machine a smoke
run's server used 0.6-0.9 s of CPU in a 14 s run, and the run took 0.27 s
longer (median of 6 interleaved runs each) than with the server at the lowest
priority, where it gets the moments training leaves a core idle (tokenizing,
writing files, the main thread's own Python) and still answers every request.

A server you started yourself (PREFECT_API_URL set, `make serve`) is not a
child of the run and keeps its priority.
"""

import os
from pathlib import Path

LOWEST_PRIORITY = 19
SERVER_APP = "prefect.server.api.server:create_app"
"""What the ephemeral server's command line names (uvicorn's application)."""


def children(proc: Path = Path("/proc")) -> dict[int, str]:
    """This process's child processes: pid -> command line (empty off Linux)."""
    found = {}
    me = str(os.getpid())
    for stat in proc.glob("[0-9]*/stat"):
        try:
            # "pid (name) state ppid ...": the name may hold spaces, so split after it
            ppid = stat.read_text().rpartition(")")[2].split()[1]
            if ppid == me:
                cmdline = (stat.parent / "cmdline").read_bytes()
                found[int(stat.parent.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue  # ended while we looked
    return found


def yield_to_training() -> list[int]:
    """Lower the ephemeral Prefect server's priority; return the pids lowered."""
    lowered = []
    for pid, cmdline in children().items():
        if SERVER_APP in cmdline:
            try:
                os.setpriority(os.PRIO_PROCESS, pid, LOWEST_PRIORITY)
                lowered.append(pid)
            except OSError:
                continue
    return lowered
