"""Run one function on two halves of the work at once: one half here, one in a fresh process.

Why a process and not a thread (models/side_thread.py): sampling a small
model is mostly Python between tiny ops, which holds the GIL, so a second
thread would wait rather than work. A spawned process has its own
interpreter and its own torch; each side gets half the threads, so the two
halves share the cores instead of fighting over them.
"""

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

import torch

A = TypeVar("A")
R = TypeVar("R")


def halves_side_by_side(work: Callable[[A], R], here: A, beside: A) -> tuple[R, R]:
    """(work(here), work(beside)): `beside` in a spawned process, half the threads each side.

    `work` and its arguments must pickle (a module-level function, or a
    functools.partial of one). An exception on either side is raised here.
    """
    threads = torch.get_num_threads()
    lane_threads = max(1, threads // 2)
    spawn = multiprocessing.get_context("spawn")  # nothing forked: no copied locks or threads
    with ProcessPoolExecutor(
        1, mp_context=spawn, initializer=torch.set_num_threads, initargs=(lane_threads,)
    ) as pool:
        there = pool.submit(work, beside)
        torch.set_num_threads(lane_threads)
        try:
            done_here = work(here)
        finally:
            torch.set_num_threads(threads)
        return done_here, there.result()
