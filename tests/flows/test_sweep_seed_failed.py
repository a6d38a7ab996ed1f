"""A seed whose run failed is named, with its task run's own message, even when what it
raised could not be brought back from its process (a Prefect server's 503 on a busy machine)."""

import time
from types import SimpleNamespace

import httpx
import pytest

from instructflow.flows.sweep import SeedFailed, seed_result

BUSY = (
    "Task run encountered an exception PrefectHTTPStatusError: Server error '503 Service "
    "Unavailable' for url 'http://127.0.0.1:41423/api/task_runs/'"
)
UNPICKLED = TypeError(
    "HTTPStatusError.__init__() missing 2 required keyword-only arguments: 'request' and 'response'"
)


class Future:
    def __init__(self, result=None, error=None, state=None):
        self._result, self._error, self._state = result, error, state
        self.wrapped_future = self  # done at once

    def done(self):
        return True

    def result(self):
        if self._error:
            raise self._error
        return self._result

    @property
    def state(self):
        if isinstance(self._state, Exception):
            raise self._state
        return self._state


def test_a_finished_seed_gives_its_result():
    assert seed_result(0, Future(result={"report": {}})) == {"report": {}}


def test_a_failed_seed_is_named_with_its_task_runs_message_not_the_unpickling_error():
    failed = Future(error=UNPICKLED, state=SimpleNamespace(message=BUSY))
    with pytest.raises(SeedFailed) as raised:
        seed_result(1, failed)
    assert str(raised.value) == f"seed 1 failed: {BUSY}"
    assert raised.value.__cause__ is UNPICKLED


def test_without_a_readable_state_the_error_itself_is_said():
    failed = Future(error=UNPICKLED, state=ConnectionError("server gone"))
    with pytest.raises(SeedFailed, match=r"^seed 2 failed: TypeError: HTTPStatusError"):
        seed_result(2, failed)


def busy_server_error() -> httpx.HTTPStatusError:
    """httpx's error for a Prefect server's 503 (what its client raises after its own retries)."""
    request = httpx.Request("POST", "http://127.0.0.1:4242/api/task_runs/")
    return httpx.HTTPStatusError(
        "Server error '503 Service Unavailable'",
        request=request,
        response=httpx.Response(503, request=request),
    )


def test_an_error_that_cannot_leave_the_seeds_process_is_said_in_one_that_can(monkeypatch):
    import pickle

    from instructflow.flows import pipeline
    from instructflow.flows.params import PipelineParams
    from instructflow.flows.sweep import seed_run

    # given a seed's run that fails on a busy server's 503 (httpx's error does not unpickle)
    busy = busy_server_error()

    def fails(*args, **kwargs):
        raise busy

    monkeypatch.setattr(pipeline, "rlhf_pipeline", fails)
    # when the seed runs
    with pytest.raises(Exception) as raised:
        seed_run.fn(PipelineParams(profile="smoke"), 3, "sweep-run")
    # then what it raises comes back from its process, and says what happened
    back = pickle.loads(pickle.dumps(raised.value))
    assert str(back) == "HTTPStatusError: Server error '503 Service Unavailable'"


def test_an_error_that_can_leave_is_raised_as_it_is(monkeypatch):
    from instructflow.flows import pipeline
    from instructflow.flows.params import PipelineParams
    from instructflow.flows.sweep import seed_run

    refused = ValueError("bad input")

    def fails(*args, **kwargs):
        raise refused

    monkeypatch.setattr(pipeline, "rlhf_pipeline", fails)
    with pytest.raises(ValueError) as raised:
        seed_run.fn(PipelineParams(profile="smoke"), 3, "sweep-run")
    assert raised.value is refused


@pytest.mark.parametrize(
    ("error", "busy"),
    [
        (busy_server_error(), True),
        (httpx.ReadTimeout("timed out"), True),
        (httpx.ConnectError("refused"), False),  # gone, not busy
        (ValueError("bad input"), False),
    ],
)
def test_only_a_busy_server_is_worth_a_new_try(error, busy):
    from instructflow.flows.sweep import server_busy

    assert server_busy(error) is busy


def seed_in_a_flow(monkeypatch, outcomes: list) -> tuple[list[int], object]:
    """Run seed_run (retry waits of 0 s) in a flow, its pipeline raising or returning
    `outcomes` in turn; the seeds its pipeline was called with, and the flow's return or error."""
    from prefect import flow

    from instructflow.flows import pipeline, sweep
    from instructflow.flows.params import PipelineParams

    calls = []

    def pipeline_run(params, sweep_run_id):
        calls.append(params.seed)
        outcome = outcomes[min(len(calls), len(outcomes)) - 1]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(pipeline, "rlhf_pipeline", pipeline_run)
    monkeypatch.setattr(sweep, "per_prompt_from", lambda report: {"sft": {}})
    quick = sweep.seed_run.with_options(retry_delay_seconds=0)

    @flow
    def one_seed():
        return quick(PipelineParams(profile="smoke"), 3, "sweep-run")

    try:
        return calls, one_seed()
    except Exception as error:  # noqa: BLE001  (the test looks at it)
        return calls, error


def test_a_seed_the_busy_server_stopped_runs_again(prefect_harness, monkeypatch):
    calls, result = seed_in_a_flow(monkeypatch, [busy_server_error(), {"policies": {}}])
    assert calls == [3, 3]
    assert result == {"report": {"policies": {}}, "per_prompt": {"sft": {}}}


def test_a_seed_gives_up_after_its_retries(prefect_harness, monkeypatch):
    from instructflow.flows.sweep import BUSY_SERVER_WAITS, ServerBusy

    calls, result = seed_in_a_flow(monkeypatch, [busy_server_error()])
    assert calls == [3] * (1 + len(BUSY_SERVER_WAITS))
    assert isinstance(result, ServerBusy) and "503 Service Unavailable" in str(result)


def test_a_seed_that_failed_on_its_own_is_not_run_again(prefect_harness, monkeypatch):
    calls, result = seed_in_a_flow(monkeypatch, [ValueError("bad input"), {"policies": {}}])
    assert calls == [3]
    assert isinstance(result, ValueError)


def test_a_seed_the_sweeps_own_signal_stopped_ends_the_sweep_as_interrupted(monkeypatch):
    import signal

    from instructflow.tasks import interrupts

    # given a sweep that received Ctrl-C, whose seed came back failed (it stopped too)
    monkeypatch.setattr(interrupts, "received", [signal.SIGINT])
    stopped = Future(error=RuntimeError("seed 0: interrupted"), state=SimpleNamespace(message=""))
    # then the sweep stops as interrupted (exit 130, "interrupted by SIGINT"), not as failed
    with pytest.raises(interrupts.RunInterrupted, match="interrupted by SIGINT"):
        seed_result(0, stopped)


def test_a_seed_stopped_by_a_signal_raises_a_plain_exception_that_comes_back(monkeypatch):
    import pickle

    from instructflow.flows import pipeline
    from instructflow.flows.params import PipelineParams
    from instructflow.flows.sweep import SeedInterrupted, seed_run
    from instructflow.models.checkpoints import TrainingInterrupted

    # Prefect's process pool never completed the future of a task that raised a
    # KeyboardInterrupt (the sweep's process waited on it for good)
    def stopped(*args, **kwargs):
        raise TrainingInterrupted("interrupted by SIGINT during sft")

    monkeypatch.setattr(pipeline, "rlhf_pipeline", stopped)
    with pytest.raises(SeedInterrupted) as raised:
        seed_run.fn(PipelineParams(profile="smoke"), 3, "sweep-run")
    assert not isinstance(raised.value, KeyboardInterrupt)
    back = pickle.loads(pickle.dumps(raised.value))
    assert str(back) == "seed 3: interrupted by SIGINT during sft"


class Seed:
    """A seed's process and its future: done after `stops_on` (a signal name) or never."""

    def __init__(self, stops_on: str | None):
        self.stops_on, self.signals = stops_on, []
        self.wrapped_future = self

    def done(self):
        return self.stops_on == "itself" or self.stops_on in self.signals

    def terminate(self):
        self.signals.append("terminate")

    def kill(self):
        self.signals.append("kill")

    def join(self, timeout=None):
        pass


@pytest.mark.parametrize(
    ("stops_on", "sent"),
    [("itself", []), ("terminate", ["terminate"]), (None, ["terminate", "kill"])],
)
def test_a_stopped_sweeps_seeds_get_sigterm_then_sigkill_only_while_one_trains_on(stops_on, sent):
    from instructflow.flows.sweep_stop import stop_seeds

    seed = Seed(stops_on)
    stop_seeds([seed], {seed}, waits=(0.2, 0.2))
    assert seed.signals == sent


def test_a_seed_runs_its_pipeline_under_the_runs_own_signal_handlers(monkeypatch):
    import signal

    from instructflow.flows import pipeline
    from instructflow.flows.params import PipelineParams
    from instructflow.flows.sweep import seed_run
    from instructflow.tasks import interrupts

    # Python's default SIGINT handler raised KeyboardInterrupt wherever the seed was; once in
    # a finalizer, whose errors Python ignores, and the seed trained on
    handlers = []

    def pipeline_run(params, sweep_run_id):
        handlers.append(signal.getsignal(signal.SIGINT))
        return {"policies": {}}

    monkeypatch.setattr(pipeline, "rlhf_pipeline", pipeline_run)
    monkeypatch.setattr("instructflow.flows.sweep.per_prompt_from", lambda report: {})
    seed_run.fn(PipelineParams(profile="smoke"), 3, "sweep-run")
    assert handlers and handlers[0] is not signal.default_int_handler
    assert handlers[0].__qualname__.startswith(interrupts._handlers.__qualname__)


def test_with_no_grace_the_first_signal_stops_at_once(monkeypatch):
    import os
    import signal

    from instructflow.tasks import interrupts

    # (the signals a run received outlive it, for its exit status: none left for later tests)
    monkeypatch.setattr(interrupts, "received", [])
    # given the handlers a sweep runs under: it has no step of its own to finish (its seeds
    # train in their own processes), so no grace (it waited 2 s before stopping its seeds)
    started = time.monotonic()
    with pytest.raises(interrupts.RunInterrupted, match="SIGTERM"):
        with interrupts.stop_on_signals(grace=0):
            # when a SIGTERM comes, then it raises there and then, not after an alarm
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    assert time.monotonic() - started < 1


def test_after_a_sigterm_to_the_sweep_alone_its_seeds_get_theirs_at_once(monkeypatch):
    import signal

    from instructflow.flows.sweep_stop import stop_seeds
    from instructflow.tasks import interrupts

    # given a sweep that a SIGTERM reached alone (`kill PID`: its seeds heard nothing)
    monkeypatch.setattr(interrupts, "received", [signal.SIGTERM])
    seed = Seed("terminate")
    started = time.monotonic()
    stop_seeds([seed], {seed}, waits=(30.0, 30.0))
    # then it passed the SIGTERM on without waiting for them to stop on their own
    assert seed.signals == ["terminate"] and time.monotonic() - started < 5


def _signalled_before_its_seed_runs() -> tuple[bool, bool]:
    """In a pool process: SIGTERM while no seed's handlers are installed, then a seed's start
    (seed_run installs the run's handlers); (still alive, stop asked of that seed)."""
    import os
    import signal

    from instructflow.models.checkpoints import stop_requested
    from instructflow.tasks import interrupts

    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.2)  # Python runs a handler between two bytecodes of the main thread
    with interrupts.stop_on_signals():
        return True, stop_requested()


def test_a_seed_process_signalled_while_idle_or_starting_lives_and_its_seed_stops_at_once():
    from concurrent.futures import ProcessPoolExecutor

    from instructflow.flows.sweep_stop import _seeds_remember_signals_between_runs

    # given a process started as the sweep's pool starts its processes
    with ProcessPoolExecutor(1, initializer=_seeds_remember_signals_between_runs) as pool:
        # when a stopping sweep's SIGTERM reaches it before a seed's handlers are in place
        alive, asked = pool.submit(_signalled_before_its_seed_runs).result(timeout=120)
    # then it lives (one killed broke the pool, which killed the seeds still stopping), and
    # the seed starting there finds the stop asked for: its first stage refuses to start
    # (run_stage), where it had trained on until stop_seeds' SIGKILL, its checkpoint lost
    assert alive and asked
