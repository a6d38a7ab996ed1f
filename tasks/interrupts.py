"""SIGINT and SIGTERM: stop a run within seconds, with a checkpoint, leaving nothing RUNNING.

The first signal asks the training loops to stop (instructflow.models.checkpoints): the
running loop saves a checkpoint after its current step and raises
TrainingInterrupted, a KeyboardInterrupt, which no retry catches: the stage's
and the pipeline's MLflow runs end KILLED (tracking.closing_run) and
Prefect records the flow run as Crashed. The evaluation's sampling polls the
request too (instructflow.tasks.evaluation.sample: after each generation batch,
and after each policy judged; the gate's head-to-head samples so, before it
writes to the registry), and no stage starts once it is set
(instructflow.flows.stages.run_stage). Elsewhere (sampling comparisons,
writing the registry) nothing polls it, so if nothing has taken it up after
`grace` seconds (SIGALRM), or at a second signal, the interrupt is raised
wherever the run is.
"""

import _imp
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from instructflow.models.checkpoints import clear_stop, request_stop, stop_honoured, stop_requested

SIGNALS = (signal.SIGINT, signal.SIGTERM)
received: list[int] = []  # the signals of the current run, first first
_installed: list = []  # the handler while stop_on_signals is active, or in a worker's run
WORKER_RUN_GRACE = 8  # seconds; a process worker sends SIGKILL 30 s after its SIGTERM


class RunInterrupted(KeyboardInterrupt):
    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


class InterruptedBeforeFlow(KeyboardInterrupt):
    """A signal in a run's first seconds (interrupt_before_flow): no stage had run."""


def is_interrupt(error: BaseException) -> bool:
    """A signal's stop: Ctrl-C (KeyboardInterrupt) or SIGTERM, which Prefect raises as
    TerminationSignal in a flow run (a cancel from its UI or CLI, a worker stopping)."""
    from prefect.exceptions import TerminationSignal

    return isinstance(error, KeyboardInterrupt | TerminationSignal)


def signal_name() -> str:
    return signal.Signals(received[0]).name if received else "SIGINT"


_cancel_seen: list[bool] = []  # set by a command-line run's cancel watcher before its SIGTERM


def note_cancel() -> None:
    """The SIGTERM about to come is a cancel from Prefect's UI or CLI (tasks/worker_exit.py)."""
    _cancel_seen.append(True)


def cancelled_worker_run() -> bool:
    """A flow run stopped by SIGTERM from Prefect: a worker's run (a cancel from Prefect's UI or
    CLI, or its worker or machine stopping), or a command-line run whose watcher saw a cancel."""
    from_worker = bool(os.environ.get("PREFECT__FLOW_RUN_ID"))
    return received[:1] == [signal.SIGTERM] and (from_worker or bool(_cancel_seen))


WAKE_SECONDS = 0.05


def wait_awake(future) -> None:
    """Wait until `future` is done (anything with done(): a concurrent.futures or a Prefect
    future), waking every WAKE_SECONDS so that a signal's handler can run.

    Python runs handlers in the main thread, between bytecodes; the kernel may deliver a
    process's signal to any of its threads, and one delivered to another thread does not end
    the main thread's sleep in a plain wait. A Ctrl-C'd sweep slept so for minutes: its
    seeds had stopped, but their futures never completed, and the grace alarm that would
    have ended the wait went to another thread.
    """
    while not future.done():
        time.sleep(WAKE_SECONDS)


def exit_status() -> int:
    return 128 + (received[0] if received else signal.SIGINT)


def _handlers(grace: int):
    """(on_signal, on_alarm): the first signal asks the loops to stop, and raises
    RunInterrupted `grace` seconds later if none took the request up; a second raises at once,
    and so does the first with no grace (a process with no step of its own to finish)."""

    def on_signal(signum: int, _frame) -> None:
        received.append(signum)
        if stop_requested() or not grace:  # a second signal, or nothing to finish: at once
            raise RunInterrupted(signum)
        print(f"\n{signal.Signals(signum).name}: stopping after the current step...", flush=True)
        request_stop()
        signal.alarm(grace)

    def on_alarm(_signum: int, _frame) -> None:
        if not stop_honoured():  # no training loop took the request up
            raise RunInterrupted(received[0])

    return on_signal, on_alarm


def disarm() -> None:
    """The run's flow has ended: cancel the alarm its first signal armed (a stop to force if
    no loop took it up). In a worker's run our handlers stay for the rest of the process
    (reclaim), and the alarm went off during Prefect's shutdown, when SIGALRM's action was
    the default again: the process died of it (exit code -14), which the worker logs as an
    unexpected exit, and a cancelled flow run then ended Crashed. Only after a signal: an
    alarm set by someone else (a test's timeout) is left alone."""
    if received:
        signal.alarm(0)


@contextmanager
def stop_on_signals(grace: int = 8) -> Iterator[None]:
    """Install the handlers for the duration of a run (main thread only)."""
    on_signal, on_alarm = _handlers(grace)
    previous = {sig: signal.signal(sig, on_signal) for sig in SIGNALS}
    previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, on_alarm)
    received.clear()
    _cancel_seen.clear()
    _installed.append(on_signal)
    try:
        yield
    finally:
        _installed.clear()
        signal.alarm(0)
        for sig, old in previous.items():
            signal.signal(sig, old)
        clear_stop()


def reclaim() -> None:
    """Inside the flow: put our handlers back over Prefect's SIGTERM bridge.

    Prefect's flow engine swaps in a SIGTERM handler that raises at once,
    wherever the run is, so the running step's checkpoint would be lost.
    Under `instructflow run` (stop_on_signals active, main thread) the signal
    goes to ours instead. In a flow run a worker started (PREFECT__FLOW_RUN_ID
    set), whose process is that run's alone, ours are installed for the rest of
    the process: a cancel from the Prefect UI or CLI is the worker's SIGTERM, and
    it gave the worker's runs no checkpoint of their running step. Called at the
    flow's start and again as each training loop starts (a test run saw
    Prefect's handler back in place by the time the base model trained).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if not _installed and os.environ.get("PREFECT__FLOW_RUN_ID"):
        on_signal, on_alarm = _handlers(WORKER_RUN_GRACE)
        signal.signal(signal.SIGALRM, on_alarm)
        received.clear()
        _cancel_seen.clear()
        _installed.append(on_signal)
    if _installed:
        for sig in SIGNALS:
            signal.signal(sig, _installed[0])


@contextmanager
def interrupt_before_flow() -> Iterator[None]:
    """Ctrl-C and SIGTERM raise RunInterrupted at once: for the seconds before a run's flow
    (main thread only), when there is nothing to checkpoint. Python's default for SIGTERM
    ends the process without its exit handlers, which would leave the temporary server it
    started early (tasks/temporary_server.start_early) for the next run to stop; and a
    process started in the background has SIGINT ignored.

    Not while the import lock is held: raised inside importlib's own code (these seconds
    are mostly imports), the exception left Python's import lock held for good, and the
    thread starting the server, at its next import, waited on it while the run waited for
    that thread (a run hung so, found 17 minutes on). There the raise is tried again every
    IMPORT_LOCK_RETRY_S (SIGALRM) until the lock is free."""

    def on_signal(signum: int, _frame) -> None:
        received[:] = [signum]
        if _imp.lock_held():
            signal.setitimer(signal.ITIMER_REAL, IMPORT_LOCK_RETRY_S)
            return
        raise RunInterrupted(signum)

    def on_retry(_signum: int, frame) -> None:
        if received:  # (an alarm of someone else's finds none)
            on_signal(received[0], frame)

    previous = {sig: signal.signal(sig, on_signal) for sig in SIGNALS}
    previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, on_retry)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, old in previous.items():
            signal.signal(sig, old)


IMPORT_LOCK_RETRY_S = 0.02
