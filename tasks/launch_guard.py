"""`python -m instructflow.tasks.launch_guard PARENT_PID COMMAND...`: COMMAND, ended when its parent dies.

A stage's launched processes run in a session of their own (so that a stop
can end them all at once, instructflow.tasks.launch), which also keeps them
out of reach of anything that ends the run's own process group. When the
run's process is killed outright (kill -9, the OOM killer), nobody ends
that session: under `--processes 2` Accelerate's launcher and both workers
went on for minutes, holding the cores, and the next run did not know them.

This guard asks the kernel (Linux's PR_SET_PDEATHSIG, kept across exec) to
send the command SIGTERM when the process that started it dies, then becomes
the command. Accelerate's launcher answers SIGTERM by ending its workers.
Elsewhere than Linux it only runs the command.
"""

import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask for `sig` when this process's parent dies; False where the kernel cannot."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def main(argv: list[str]) -> None:
    parent, command = int(argv[0]), argv[1:]
    die_with_parent()
    if os.getppid() != parent:  # it died before the request was in place
        sys.exit(1)
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
