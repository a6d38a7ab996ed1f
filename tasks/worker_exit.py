"""A flow run started by a Prefect worker outlives that worker (killed, OOM-killed, restarted).

Prefect's process worker reads the flow run's stdout and stderr through two pipes and
copies them to its own output. When the worker dies, those pipes lose their only
reader: the run's next console line fails with BrokenPipeError, which the console log
handler (rich) turns into SystemExit(1), so the run ended Crashed mid-training.

`outlive_worker` keeps a read end of each such pipe in the run's own process, so a
write never meets a pipe without a reader, and a thread waits for the worker to exit.
Then it points stdout and stderr at the worker's own log file when the worker wrote
to one (`make serve`: .serve/worker.log, where the run's earlier lines are), else at
runs/.console/<flow run id>.log, and copies there what the worker left unread. The
Prefect API gets the run's logs all along. Linux only (procfs); elsewhere it does nothing.

A cancel reaches a run through the worker that started it (it sends SIGTERM; a new
worker leaves runs it did not start alone): an orphaned run kept going and its flow
run stayed Cancelling after it ended. So from then on the run watches its own state
and sends itself that SIGTERM. Prefect's engine reports a SIGTERM without a runner's
intent as Crashed and then dies by the signal (it is the worker that marks a cancelled run
Cancelled), so a small process of its own, started before that SIGTERM, waits for the run's
process to end and marks its flow run Cancelled. Run as a module, this file is that process.
"""

import contextvars
import os
import select
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from uuid import UUID

from instructflow.tasks import interrupts, outages
from instructflow.tasks.paths import runs_dir

STREAMS = (1, 2)  # stdout, stderr
CANCEL_POLL_SECONDS = 5.0
_started = threading.Event()  # once per process (a sweep runs the pipeline flow many times)


def outlive_worker() -> bool:
    """In a flow run a worker started (PREFECT__FLOW_RUN_ID set): survive the worker's exit."""
    run_id = os.environ.get("PREFECT__FLOW_RUN_ID")
    if not run_id:
        return False  # `instructflow run`: its console is a person's terminal or their pipe
    fallback = runs_dir() / ".console" / f"{run_id}.log"
    return outlive_parent(fallback, then=lambda: _stop_when_cancelled(UUID(run_id)))


def outlive_parent(fallback: Path, then: Callable[[], None] | None = None) -> bool:
    """Hold a read end of each stream that is a pipe; when the parent exits, write to a file
    (and call `then`)."""
    parent = os.getppid()
    pipes = {fd: _reader(fd) for fd in STREAMS if _is_pipe(fd)}
    pipes = {fd: reader for fd, reader in pipes.items() if reader is not None}
    if not pipes or parent == 1 or _started.is_set():  # nothing to keep, or done already
        for reader in pipes.values():
            os.close(reader)
        return False
    _started.set()
    target = _parent_log(parent)  # opened now: once the parent is gone, procfs no longer has it
    threading.Thread(
        target=_wait_then_switch,
        args=(parent, pipes, target, fallback, then),
        name="instructflow-outlive-worker",
        daemon=True,
    ).start()
    return True


def _is_pipe(fd: int) -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False


def _reader(fd: int) -> int | None:
    """A read end of the pipe `fd` writes to (Linux lets procfs open the other end)."""
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None


def _parent_log(parent: int) -> int | None:
    """The parent's stdout when it is a regular file (a worker's log), opened for appending."""
    try:
        fd = os.open(f"/proc/{parent}/fd/1", os.O_WRONLY | os.O_APPEND)
    except OSError:
        return None
    if stat.S_ISREG(os.fstat(fd).st_mode):
        return fd
    os.close(fd)
    return None


def _wait_then_switch(parent, pipes: dict[int, int], target: int | None, fallback: Path, then):
    _wait_for_exit(parent)
    if target is None:
        fallback.parent.mkdir(parents=True, exist_ok=True)
        target = os.open(fallback, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    note = f"instructflow: the worker (pid {parent}) that started run pid {os.getpid()} is gone; "
    os.write(target, (note + "the run goes on, its output here\n").encode())
    for fd in pipes:
        os.dup2(target, fd)  # from here the run's own writes go to the file
    for reader in pipes.values():
        os.set_blocking(reader, True)
    # What the worker left unread, then whatever processes this run started (they hold
    # the pipes too) still write there; each reader ends when its last writer has.
    for reader in pipes.values():
        threading.Thread(target=_copy, args=(reader, target), daemon=True).start()
    if then is not None:
        then()


def _wait_for_exit(pid: int) -> None:
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd (kernel < 5.3): ask once a second
        while os.getppid() == pid:
            threading.Event().wait(1.0)
        return
    select.select([pidfd], [], [])  # readable once the process has exited
    os.close(pidfd)


def stop_on_cancel(flow_run_id: UUID | str) -> bool:
    """A run `instructflow run` started against a Prefect server (PREFECT_API_URL, exported or
    in the Prefect profile): a cancel from the UI or CLI reaches no worker there, so the run
    watches for it as an orphaned worker's run does (it waited out an approval pause and
    ended Completed). True if it watches; a worker's run has its worker, a temporary server
    no UI to cancel from."""
    if os.environ.get("PREFECT__FLOW_RUN_ID") or not outages.configured_prefect_api():
        return False
    # The flow's own Prefect settings go with it: a new thread starts with the process's, which
    # in a sweep's seed (PREFECT_API_URL set after Prefect loaded them) name no server, so
    # each seed's watcher started a Prefect server of its own, one of them as Ctrl-C stopped
    # the sweep, outliving it.
    in_flows_settings = contextvars.copy_context()
    threading.Thread(
        target=in_flows_settings.run,
        args=(_stop_when_cancelled, UUID(str(flow_run_id))),
        name="instructflow-stop-on-cancel",
        daemon=True,
    ).start()
    return True


def _stop_when_cancelled(flow_run_id: UUID) -> None:
    """What the worker would do on a cancel: SIGTERM to this process (tasks/interrupts.py);
    done once the flow run has ended."""
    from prefect.client.orchestration import get_client

    while not threading.Event().wait(CANCEL_POLL_SECONDS):
        try:
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(flow_run_id).state
        except Exception:  # the server away for a while: the run itself says so if it matters
            outages.note_prefect_api_lost()  # so the flow's end reads its task runs back
            continue
        if state is not None and state.is_final():
            return
        if state is not None and state.is_cancelling():
            _mark_cancelled_after_exit(flow_run_id)
            interrupts.note_cancel()
            os.kill(os.getpid(), signal.SIGTERM)
            return


def _mark_cancelled_after_exit(flow_run_id: UUID) -> None:
    """Start this module in a session of its own to mark the run Cancelled once this process
    has exited (the engine reports Crashed first, and no code of this process runs after)."""
    subprocess.Popen(
        [sys.executable, "-m", __spec__.name, str(os.getpid()), str(flow_run_id)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,  # the run's console pipes must not outlive the run
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _mark_cancelled(flow_run_id: UUID) -> None:
    """What the worker would do after its SIGTERM: the flow run ends Cancelled, not Crashed
    (unless it finished some other way first, or the server is away)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings
    from prefect.states import Cancelled

    if not get_current_settings().api.url:  # a temporary server would not know the run
        return
    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(flow_run_id).state
            if state is None or not state.is_final() or state.is_crashed():
                message = "cancelled: the run stopped on the SIGTERM it sent itself (no worker to send it)"
                client.set_flow_run_state(flow_run_id, Cancelled(message=message), force=True)
    except Exception:  # exiting anyway: the run stays as the engine left it
        return


def _copy(reader: int, target: int) -> None:
    while chunk := os.read(reader, 65536):
        os.write(target, chunk)
    os.close(reader)


if __name__ == "__main__":  # _mark_cancelled_after_exit's process: RUN_PID FLOW_RUN_ID
    _wait_for_exit(int(sys.argv[1]))
    _mark_cancelled(UUID(sys.argv[2]))
