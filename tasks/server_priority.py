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

from instructflow.tasks.leftovers import ephemeral_servers

LOWEST_PRIORITY = 19


def yield_to_training() -> list[int]:
    """Lower the priority of the ephemeral Prefect servers this process started; their pids."""
    lowered = []
    for pid, parent in ephemeral_servers(None).items():
        if parent != os.getpid():
            continue
        try:
            os.setpriority(os.PRIO_PROCESS, pid, LOWEST_PRIORITY)
            lowered.append(pid)
        except OSError:
            continue
    return lowered
