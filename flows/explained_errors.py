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


# Bad input, by class: the errors' modules are named, not imported, so that telling a
# registry name that is not there imports neither torch nor peft (seconds) to say so.
BAD_INPUT = (
    "instructflow.tasks.data_version.DataMismatchError",
    "instructflow.tasks.dataset_dvc.OutsideProject",
    "instructflow.tasks.table_errors.TableError",
    "instructflow.models.hub.ModelNotFoundError",
    "instructflow.flows.params_io.ParamsError",
    "instructflow.tasks.preflight.InputRefused",
    "instructflow.tasks.registry_config.RegistryLookupError",
)


def bad_input_errors() -> tuple[type[BaseException], ...]:
    """The BAD_INPUT classes (importing their modules), for an `except` clause."""
    import importlib

    return tuple(
        getattr(importlib.import_module(module), name)
        for module, _, name in (path.rpartition(".") for path in BAD_INPUT)
    )


def _is_a(error: BaseException, paths: tuple[str, ...]) -> bool:
    """isinstance by class path: a raised error's classes are imported already."""
    return any(f"{kind.__module__}.{kind.__qualname__}" in paths for kind in type(error).__mro__)


def explanation(error: BaseException, resumable: bool = True) -> tuple[int, str] | None:
    """The exit status and the line the command line prints for `error`; None for a bug.
    `resumable`: the command keeps finished stages and checkpoints (run, sweep).

    The one place that tells the kinds apart: the log filter keeps a traceback exactly when
    this is None, so the two cannot disagree about which errors are explained.
    """
    if _is_a(error, BAD_INPUT):  # a bad setting in a second: imports nothing
        return 2, str(error)
    if not isinstance(error, Exception):  # a signal's stop (KeyboardInterrupt, SIGTERM)
        return _signal_explanation(error)
    if _is_a(error, ("instructflow.models.numeric.NonFiniteError",)):
        # the settings diverged: a retry diverges the same way
        return 2, (
            f"{error}: the stage's last good checkpoint is kept; lower its lr (or grad_clip) "
            "in --params and run again"
        )
    from instructflow.tasks.outages import RunFault, ServiceUnreachable, fault_line

    if isinstance(error, ServiceUnreachable | RunFault):
        return 3, str(error)
    message = fault_line(error, resumable)
    return None if message is None else (3, message)


def _signal_explanation(error: BaseException) -> tuple[int, str] | None:
    # A signal that cut an import short is not followed by a second import of it (which
    # fails on the half-made package): interrupts imports torch only if a run got that far.
    from instructflow.tasks import interrupts

    if isinstance(error, interrupts.InterruptedBeforeFlow):
        return interrupts.exit_status(), (
            f"interrupted by {interrupts.signal_name()} before the flow started: no stage ran; "
            "run the same command again."
        )
    if not interrupts.is_interrupt(error):
        return None
    # Why the signal came, then where the run stopped: one parenthesis, not two in a row.
    notes = ["a cancel from Prefect"] if interrupts.cancelled_worker_run() else []
    if str(error) and not isinstance(error, interrupts.RunInterrupted):
        notes.append(str(error))
    said = f" ({'; '.join(notes)})" if notes else ""
    return interrupts.exit_status(), (
        f"interrupted by {interrupts.signal_name()}{said}: MLflow runs marked KILLED, "
        "checkpoints kept under runs/; run the same command again to resume."
    )


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
