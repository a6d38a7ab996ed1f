"""A function that tests/tasks/test_launch.py runs in launched processes (importable by name there)."""

import os
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from instructflow.models.distributed import Group


def log_then_fail_on_rank_one(log) -> None:
    """Every process logs; then rank 1 fails on bad input while rank 0 waits for it in a collective."""
    group = Group(Accelerator())
    print("a line every process prints", flush=True)
    log(0, {"rank": float(group.rank)})
    if int(os.environ["RANK"]) == 1:
        raise ValueError("demonstrations.jsonl row 7: response is empty\nsecond line not shown")
    group.sum(torch.zeros(1))


def train_until_stopped(log) -> None:
    """A stand-in training loop: a collective per step, and the stop request polled after each.

    Each process leaves `training<rank>` beside the stop file once it trains.
    """
    from instructflow.models.checkpoints import STOP_FILE_ENV, after_step

    group = Group(Accelerator())
    folder = Path(os.environ[STOP_FILE_ENV]).parent
    for step in range(1, 10_000):
        group.sum(torch.zeros(1))
        (folder / f"training{group.rank}").touch()
        time.sleep(0.05)
        after_step(None, step, dict)


def seeded_training(log, seed: int) -> dict:
    """A few SGD steps on data drawn from torch's global generator; what a stage returns."""
    torch.manual_seed(seed)
    net = torch.nn.Linear(16, 4)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    for step in range(5):
        x = torch.randn(32, 16)
        loss = net(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log(step, {"loss": float(loss)})
    return {
        "weights": net.weight.detach().flatten().tolist(),
        "pid": os.getpid(),
        "threads": torch.get_num_threads(),
    }
