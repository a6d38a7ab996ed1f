"""Run one function on two halves of the work at once: one half here, one in a fresh process.

Why a process and not a thread (models/side_thread.py): sampling a small
model is mostly Python between tiny ops, which holds the GIL, so a second
thread would wait rather than work. A spawned process has its own
interpreter and its own torch; each side gets half the threads, so the two
halves share the cores instead of fighting over them.
"""

import multiprocessing
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, wait
from pathlib import Path
from typing import TypeVar

import torch

from instructflow.models.checkpoints import STOP_FILE_ENV, interrupt, stop_requested

A = TypeVar("A")
R = TypeVar("R")


def _start_lane(threads: int, stop_file: str) -> None:
    torch.set_num_threads(threads)
    os.environ[STOP_FILE_ENV] = stop_file  # the spawned side's stop request (stop_requested)


def halves_side_by_side(work: Callable[[A], R], here: A, beside: A) -> tuple[R, R]:
    """(work(here), work(beside)): `beside` in a spawned process, half the threads each side.

    `work` and its arguments must pickle (a module-level function, or a
    functools.partial of one). An exception on either side is raised here.

    A stop request here (instructflow.models.checkpoints) reaches the other
    side as a stop file, as tasks/launch.py passes it to a stage's processes:
    the signal went to this process only (SIGTERM), and leaving the pool waits
    for the other side's `work`, so it must see the request to stop soon.
    """
    threads = torch.get_num_threads()
    lane_threads = max(1, threads // 2)
    spawn = multiprocessing.get_context("spawn")  # nothing forked: no copied locks or threads
    with tempfile.TemporaryDirectory(prefix="instructflow-lane-") as folder:
        stop_file = Path(folder) / "stop"
        with ProcessPoolExecutor(
            1, mp_context=spawn, initializer=_start_lane, initargs=(lane_threads, str(stop_file))
        ) as pool:
            there = pool.submit(work, beside)
            torch.set_num_threads(lane_threads)
            try:
                done_here = work(here)
                # Polled, not a plain wait: a stop must not wait for the other half to end.
                while not wait([there], timeout=0.2).done and not stop_requested():
                    pass
                if stop_requested():
                    raise interrupt("stopped while the other half of the work ran")
            finally:
                torch.set_num_threads(threads)
                if stop_requested():
                    stop_file.touch()
            return done_here, there.result()
