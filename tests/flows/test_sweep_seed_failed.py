"""A seed whose run failed is named, with its task run's own message, even when what it
raised could not be brought back from its process (a Prefect server's 503 on a busy machine)."""

from types import SimpleNamespace

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


def test_an_error_that_cannot_leave_the_seeds_process_is_said_in_one_that_can(monkeypatch):
    import pickle

    import httpx

    from instructflow.flows import pipeline
    from instructflow.flows.params import PipelineParams
    from instructflow.flows.sweep import seed_run

    # given a seed's run that fails on a busy server's 503 (httpx's error does not unpickle)
    request = httpx.Request("POST", "http://127.0.0.1:4242/api/task_runs/")
    busy = httpx.HTTPStatusError(
        "Server error '503 Service Unavailable'",
        request=request,
        response=httpx.Response(503, request=request),
    )

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
