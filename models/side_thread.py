"""Run two independent pieces of torch work at once, one CPU core each.

Why: PPO's networks here are small (a 1M-parameter GPT-2 multiplies
[1600 x 128] by [128 x 384]): one op cannot keep two cores busy, so intra-op
threading gains little. But the policy and the value model are independent
networks with their own optimizers, and a rollout's four scoring passes
(policy, reference, value, reward) are independent of each other. Run one
half in a second thread, each thread with ONE intra-op thread, and both
cores work. Every op then runs single-threaded, exactly as in a 1-thread
run, so a 2-thread run computes the numbers of a 1-thread run.

torch ops release the GIL while they run; what stays serial is the Python
between them, small next to the ops at these sizes.
"""

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import torch

A = TypeVar("A")
B = TypeVar("B")


class SideThread:
    """`both(first, second)`: first() here and second() in a side thread when >= 2 threads are allowed.

    With fewer threads (torch.get_num_threads() < 2), on an accelerator, or
    with `enabled=False`, it simply calls first() then second(). The side
    thread inherits the caller's grad / inference mode (both are thread-local
    in torch). `second` must not draw random numbers: which thread draws
    first would then decide the results.
    """

    def __init__(self, device: torch.device, enabled: bool = True) -> None:
        self.enabled = enabled and device.type == "cpu"
        self._pool: ThreadPoolExecutor | None = None

    def active(self) -> bool:
        return self.enabled and torch.get_num_threads() >= 2

    @contextmanager
    def one_thread(self) -> Iterator[None]:
        """Inside, torch uses one intra-op thread when the side thread is active.

        For work with nothing to put beside it whose numbers must not depend on
        the thread count (sampling a rollout, whose logits give the policy's
        log-probs): every op then runs as in a 1-thread run.
        """
        if not self.active():
            yield
            return
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    def both(self, first: Callable[[], A], second: Callable[[], B]) -> tuple[A, B]:
        if not self.active():
            a = first()
            return a, second()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ppo-side")
        grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

        def run_second() -> B:
            torch.set_num_threads(1)
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                return second()

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            future = self._pool.submit(run_second)
            try:
                a = first()
            finally:
                b = future.result()  # also waits (and re-raises) when first() failed
        finally:
            torch.set_num_threads(threads)
        return a, b
