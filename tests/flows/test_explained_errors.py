"""Prefect's run logs keep a traceback only for errors the command line cannot explain in one line."""

import errno
import io
import logging
import signal

import pytest

from instructflow.flows.explained_errors import (
    PREFECT_RUN_LOGGERS,
    explanation,
    keep_tracebacks_for_bugs,
)
from instructflow.models.numeric import NonFiniteError
from instructflow.tasks.outages import RunFault, ServerBusy, ServiceUnreachable
from instructflow.tasks.preflight import InputRefused


def logged_failure(error: BaseException) -> str:
    """What Prefect's flow-run logger writes when a flow run fails with `error`."""
    logger = logging.getLogger("prefect.flow_runs")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        try:
            raise error
        except BaseException as raised:
            # as prefect.flow_engine does
            logger.exception("Encountered exception during execution: %r", raised)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


EXPLAINED = {
    "bad input": (InputRefused("data/sft.jsonl row 3, field 'prompt': empty"), 2),
    "full disk": (OSError(errno.ENOSPC, "No space left on device", "/x/model.safetensors"), 3),
    "server down": (ServiceUnreachable("MLflow", "http://127.0.0.1:5000", "refused", "x"), 3),
    "server lost": (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), 3),
    "Prefect busy for good": (ServerBusy("Prefect's server answered 503 to each of 11 asks"), 3),
    "a worker's fault": (RunFault("lost a service mid-run (MLflow: ...)"), 3),
    "Ctrl-C": (KeyboardInterrupt(), 128 + signal.SIGINT),
    "diverged": (
        NonFiniteError("policy gradient norm", 1, float("inf"), "ppo_ptx", "iteration"),
        2,
    ),
}


def test_a_diverged_stage_says_what_to_change():
    _, line = explanation(
        NonFiniteError("policy gradient norm", 1, float("inf"), "ppo_ptx", "iteration")
    )
    assert line.startswith("stage ppo_ptx, iteration 2: policy gradient norm is inf")
    assert "lower its lr" in line


@pytest.mark.parametrize("error, status", EXPLAINED.values(), ids=EXPLAINED)
def test_each_explained_error_has_its_exit_status_and_one_line(error, status, monkeypatch):
    from instructflow.tasks import interrupts

    # no signal received in this process (a test before may have sent itself one)
    monkeypatch.setattr(interrupts, "received", [])
    said = explanation(error)
    assert said is not None and said[0] == status
    assert len(said[1].splitlines()) == 1


def test_a_sigterm_from_a_cancel_says_it_was_a_cancel(monkeypatch):
    from instructflow.tasks import interrupts

    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    monkeypatch.setattr(interrupts, "received", [signal.SIGTERM])
    monkeypatch.setattr(interrupts, "_cancel_seen", [])
    stopped = interrupts.RunInterrupted(signal.SIGTERM)
    assert explanation(stopped)[1].startswith("interrupted by SIGTERM: MLflow runs marked KILLED")
    interrupts.note_cancel()  # the run's cancel watcher saw the flow run Cancelling
    status, line = explanation(stopped)
    assert status == 128 + signal.SIGTERM
    assert line.startswith("interrupted by SIGTERM (a cancel from Prefect): MLflow runs")


def test_a_cancel_that_stopped_a_training_loop_reads_as_one_parenthesis(monkeypatch):
    """Where the loop stopped joins the cancel's note in one parenthesis: the line read
    'interrupted by SIGTERM (a cancel from Prefect) (stopped after step 27; ...)'."""
    from instructflow.models.checkpoints import TrainingInterrupted
    from instructflow.tasks import interrupts

    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    monkeypatch.setattr(interrupts, "received", [signal.SIGTERM])
    monkeypatch.setattr(interrupts, "_cancel_seen", [])
    interrupts.note_cancel()
    where = "stopped after step 27; checkpoint at step 27 kept"
    _, line = explanation(TrainingInterrupted(where))
    assert line.startswith(f"interrupted by SIGTERM (a cancel from Prefect; {where}): MLflow runs")
    assert ") (" not in line


def test_a_bug_has_no_explanation():
    assert explanation(ZeroDivisionError("division by zero")) is None


@pytest.mark.parametrize("error", [e for e, _ in EXPLAINED.values()], ids=EXPLAINED)
def test_an_explained_error_is_logged_without_its_traceback(error):
    keep_tracebacks_for_bugs()
    text = logged_failure(error)
    assert text.startswith("Encountered exception during execution: ")
    assert "Traceback" not in text
    assert len(text.strip().splitlines()) == 1


def test_a_bug_keeps_its_traceback():
    keep_tracebacks_for_bugs()
    text = logged_failure(ZeroDivisionError("division by zero"))
    assert "Traceback (most recent call last)" in text
    assert text.strip().endswith("ZeroDivisionError: division by zero")


def test_installing_twice_adds_one_filter():
    keep_tracebacks_for_bugs()
    keep_tracebacks_for_bugs()
    for name in PREFECT_RUN_LOGGERS:
        ours = [f for f in logging.getLogger(name).filters if "Explained" in type(f).__name__]
        assert len(ours) == 1
