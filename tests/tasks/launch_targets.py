"""A function that tests/tasks/test_launch.py runs in launched processes (importable by name there)."""

import os

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
