"""Functions that tests/tasks/test_launch.py runs in launched processes (importable by name there)."""

import os

import torch
from accelerate import Accelerator

from instructflow.models.distributed import Group


def rank_sum(log) -> dict:
    """Every process adds rank + 1; rank 0 logs and returns the total and the world it saw."""
    group = Group(Accelerator())
    total = float(group.sum(torch.tensor(float(group.rank + 1))))
    log(0, {"total": total})
    return {"total": total, "size": group.size, "backend": torch.distributed.get_backend()}


def fail_on_rank_one(log) -> None:
    """Rank 1 fails on bad input while rank 0 waits for it in a collective: the stage must fail, not hang."""
    group = Group(Accelerator())
    if int(os.environ["RANK"]) == 1:
        raise ValueError("demonstrations.jsonl row 7: response is empty\nsecond line not shown")
    group.sum(torch.zeros(1))
