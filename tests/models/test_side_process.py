import operator
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
