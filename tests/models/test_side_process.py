import operator
import time
from functools import partial

import pytest
import torch

from instructflow.models.side_process import halves_side_by_side


def threads_and_sum(values: list[int]) -> tuple[int, int]:
    return torch.get_num_threads(), sum(values)


def test_each_half_runs_with_half_the_threads_and_the_caller_gets_its_threads_back():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        here, beside = halves_side_by_side(threads_and_sum, [1, 2], [3, 4, 5])
        assert here == (1, 3)
        assert beside == (1, 12)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_failure_in_the_other_process_is_raised_here():
    with pytest.raises(ZeroDivisionError):
        halves_side_by_side(partial(operator.truediv, 1), 1, 0)


def stop_here_and_wait_beside(side: str) -> str:
    """Here: a stop request (the signal reaches this process only). Beside: work that stops
    when it sees one, as the evaluation's sampling does between batches."""
    from instructflow.models.checkpoints import request_stop, stop_requested

    if side == "here":
        request_stop()
        return "asked"
    deadline = time.monotonic() + 60
    while not stop_requested() and time.monotonic() < deadline:
        time.sleep(0.05)
    return "stopped" if stop_requested() else "never asked"


def test_a_stop_request_here_stops_both_halves_at_once():
    from instructflow.models.checkpoints import TrainingInterrupted, clear_stop

    # given two halves, the other one working until it sees a stop request
    started = time.monotonic()
    try:
        # when this side asks for a stop
        with pytest.raises(TrainingInterrupted):
            halves_side_by_side(stop_here_and_wait_beside, "here", "beside")
    finally:
        clear_stop()
    # then the other half saw it and ended too: leaving the pool waits for it
    assert time.monotonic() - started < 30
