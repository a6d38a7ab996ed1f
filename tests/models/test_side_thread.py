"""Tests for instructflow.models.side_thread and for PPO's use of it: two cores, the numbers of one."""

import threading
from pathlib import Path

import pytest
import torch

from instructflow.models.ppo_loop import ppo_train
from instructflow.models.side_thread import SideThread
from tests.models.test_lm import save_tiny_checkpoint
from tests.models.test_ppo import PROMPT, toy_trainer


@pytest.fixture
def threads():
    """set(n) for the test; the process's thread count is restored after it."""
    saved = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(saved)


def where_and_how() -> tuple[str, int, bool]:
    return threading.current_thread().name, torch.get_num_threads(), torch.is_grad_enabled()


def test_two_threads_run_the_second_half_beside_with_one_thread_each(threads) -> None:
    # given two threads allowed
    threads(2)
    side = SideThread(torch.device("cpu"))
    # when both halves run under no_grad
    with torch.no_grad():
        first, second = side.both(where_and_how, where_and_how)
    # then the first ran here and the second in the side thread, each with one
    # intra-op thread, both under no_grad
    assert first == (threading.current_thread().name, 1, False)
    assert second[0] != first[0] and second[1:] == (1, False)
    # and the caller's thread count is back
    assert torch.get_num_threads() == 2


def test_one_thread_runs_both_halves_here_in_order(threads) -> None:
    threads(1)
    calls = []
    side = SideThread(torch.device("cpu"))
    a, b = side.both(lambda: calls.append("a") or 1, lambda: calls.append("b") or 2)
    assert (a, b, calls) == (1, 2, ["a", "b"])
    assert not side.active()


def test_a_failure_in_either_half_reaches_the_caller(threads) -> None:
    threads(2)
    side = SideThread(torch.device("cpu"))

    def boom():
        raise RuntimeError("side failed")

    with pytest.raises(RuntimeError, match="side failed"):
        side.both(lambda: 1, boom)
    assert torch.get_num_threads() == 2


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint("gpt2", tmp_path_factory.mktemp("side") / "ckpt")


def train(checkpoint: Path, n_threads: int) -> tuple[object, list[dict]]:
    torch.set_num_threads(n_threads)
    trainer, _ = toy_trainer(checkpoint, iterations=2, kl_beta=0.1, max_new_tokens=4)
    seen: list[dict] = []
    ppo_train(trainer, [PROMPT, PROMPT + " now"], None, lambda i, m: seen.append(m))
    return trainer, seen


def test_ppo_on_two_threads_computes_exactly_what_one_thread_does(checkpoint, threads) -> None:
    # given the same PPO run on one thread (sequential) and on two (side by side)
    one, one_metrics = train(checkpoint, 1)
    two, two_metrics = train(checkpoint, 2)
    # (the two-thread run did use the side thread; the one-thread run never started it)
    assert two.side._pool is not None and one.side._pool is None
    # then every weight of the policy and the value model is bit for bit the same
    for a, b in (
        (one.unwrapped_policy, two.unwrapped_policy),
        (one.unwrapped_value_model, two.unwrapped_value_model),
    ):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # and so is every logged figure (timings aside)
    for m1, m2 in zip(one_metrics, two_metrics, strict=True):
        for key in m1:
            if "seconds" not in key:
                assert m1[key] == m2[key] or (m1[key] != m1[key] and m2[key] != m2[key]), key
