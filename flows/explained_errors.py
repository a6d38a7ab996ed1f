"""Errors that say in one line what went wrong and what to do, and keeping that line visible.

Two kinds: bad input (a table, parameters, a model folder, a registry name:
exit 2, as argparse does for bad usage) and a fault outside the project (a
server that is down or went away, a full or read-only disk, a signal: exit 3,
or 128 + the signal). The command line prints the line; nothing else is useful
to the user, who has nothing to debug.

Prefect logs a failed flow run with its whole traceback ("Encountered
exception during execution", about 100 lines of engine frames), to the
terminal and to the UI's log, above that line. `keep_tracebacks_for_bugs`
drops the traceback from Prefect's run logs for these errors only: any other
error is a bug, and keeps it.
"""

import logging

# Prefect's run loggers: where flow and task runs log their failures.
PREFECT_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs", "prefect.engine")


def bad_input_errors() -> tuple[type[BaseException], ...]:
    from instructflow.flows.params_io import ParamsError
    from instructflow.models.hub import ModelNotFoundError
    from instructflow.tasks.data_version import DataMismatchError
    from instructflow.tasks.preflight import InputRefused
    from instructflow.tasks.registry_config import RegistryLookupError
    from instructflow.tasks.tables import TableError

    return (
        DataMismatchError,
        TableError,
        ModelNotFoundError,
        ParamsError,
        InputRefused,
        RegistryLookupError,
    )


def explanation(error: BaseException, resumable: bool = True) -> tuple[int, str] | None:
    """The exit status and the line the command line prints for `error`; None for a bug.
    `resumable`: the command keeps finished stages and checkpoints (run, sweep).

    The one place that tells the kinds apart: the log filter keeps a traceback exactly when
    this is None, so the two cannot disagree about which errors are explained.
    """
    from instructflow.flows.params_io import ParamsError

    # These two are told before bad_input_errors() imports MLflow, Prefect and torch: a bad
    # setting in a second, and a signal that cut one of those imports short is not followed
    # by a second import of it, which fails on the half-made package.
    if isinstance(error, ParamsError):
        return 2, str(error)
    from instructflow.tasks import interrupts

    if isinstance(error, interrupts.InterruptedBeforeFlow):
        return interrupts.exit_status(), (
            f"interrupted by {interrupts.signal_name()} before the flow started: no stage ran; "
            "run the same command again."
        )
    from instructflow.tasks.outages import RunFault, ServiceUnreachable, fault_line

    if isinstance(error, bad_input_errors()):
        return 2, str(error)
    from instructflow.models.numeric import NonFiniteError

    if isinstance(error, NonFiniteError):  # the settings diverged: a retry diverges the same way
        return 2, (
            f"{error}: the stage's last good checkpoint is kept; lower its lr (or grad_clip) "
            "in --params and run again"
        )
    if interrupts.is_interrupt(error):
        detail = (
            f" ({error})" if str(error) and not isinstance(error, interrupts.RunInterrupted) else ""
        )
        cause = " (a cancel from Prefect)" if interrupts.cancelled_worker_run() else ""
        return interrupts.exit_status(), (
            f"interrupted by {interrupts.signal_name()}{cause}{detail}: MLflow runs marked KILLED, "
            "checkpoints kept under runs/; run the same command again to resume."
        )
    if isinstance(error, ServiceUnreachable | RunFault):
        return 3, str(error)
    if not isinstance(error, Exception):
        return None
    message = fault_line(error, resumable)
    return None if message is None else (3, message)


def is_explained(error: BaseException) -> bool:
    """Whether the command line has a line of its own for `error`."""
    return explanation(error) is not None


class _NoTracebackForExplained(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if isinstance(record.exc_info, tuple) else None
        if error is not None and is_explained(error):
            record.exc_info = None
            record.exc_text = None
        return True  # the message itself always stays


def keep_tracebacks_for_bugs() -> None:
    """Install the filter on Prefect's run loggers (once per process; imports no Prefect)."""
    for name in PREFECT_RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoTracebackForExplained) for f in logger.filters):
            logger.addFilter(_NoTracebackForExplained())
