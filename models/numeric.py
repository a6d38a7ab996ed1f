"""Numeric faults: a NaN or inf stops training at the step it appears, naming what and where.

A loss, reward, advantage or gradient that is not finite would otherwise
poison every later step (and a checkpoint); the loops call `check_finite`
before the optimizer steps, so the saved state is the last good one.
"""

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class NonFiniteError(ValueError):
    """A ValueError: bad numbers do not get better on a retry. `step` counts from 0 (the steps
    finished before it); the message counts from 1, as the progress lines do."""

    def __init__(
        self, quantity: str, step: int, value: float, stage: str | None = None, unit: str = "step"
    ):
        self.quantity, self.step, self.value, self.stage, self.unit = (
            quantity, step, value, stage, unit
        )  # fmt: skip
        where = f"stage {stage}, " if stage else ""
        super().__init__(
            f"{where}{unit} {step + 1}: {quantity} is {value} (not finite); training stopped"
        )


def check_finite(quantity: str, step: int, value: torch.Tensor | float, unit: str = "step") -> None:
    """Raise NonFiniteError if `value` (a number or any element of a tensor) is NaN or inf;
    `step`: the steps (or PPO iterations, `unit`) finished before this one."""
    if isinstance(value, torch.Tensor):
        finite = torch.isfinite(value.detach())
        if bool(finite.all()):
            return
        bad = value.detach()[~finite].flatten()[0].item()
    else:
        if math.isfinite(value):
            return
        bad = value
    raise NonFiniteError(quantity, step, bad, unit=unit)


@contextmanager
def in_stage(stage: str) -> Iterator[None]:
    """Name the stage in a NonFiniteError raised inside."""
    try:
        yield
    except NonFiniteError as error:
        if error.stage is not None:
            raise
        raise NonFiniteError(error.quantity, error.step, error.value, stage, error.unit) from None
