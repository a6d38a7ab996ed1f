"""A function that tests/tasks/test_launch.py runs in launched processes (importable by name there)."""

import os
import time

import torch
from accelerate import Accelerator

from instructflow.models.distributed import Group


def log_then_fail_on_rank_one(log) -> None:
    """Every process logs; then rank 1 fails on bad input while rank 0 waits for it in a collective."""
    group = Group(Accelerator())
    log(0, {"rank": float(group.rank)})
    if int(os.environ["RANK"]) == 1:
        raise ValueError("demonstrations.jsonl row 7: response is empty\nsecond line not shown")
    group.sum(torch.zeros(1))


def train_until_stopped(log) -> None:
    """A stand-in training loop: a collective per step, and the stop request polled after each."""
    from instructflow.models.checkpoints import after_step

    group = Group(Accelerator())
    for step in range(1, 10_000):
        group.sum(torch.zeros(1))
        time.sleep(0.05)
        after_step(None, step)
