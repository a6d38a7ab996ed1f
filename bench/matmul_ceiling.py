"""How fast a training step's own matmuls run when nothing else runs: the MFU a step could reach.

bench/mfu.py divides a step's model FLOPs by a peak measured on 1024 x 1024
matmuls. A 128-wide model's matmuls are far smaller ([~400 tokens, 128] x
[128, 512] and their backward), and even alone they do not reach that peak.
This module records every matmul a step dispatches (aten mm, addmm, bmm,
forward and backward, with their shapes and strides) and replays them bare,
on fresh tensors of the same layout, best of a few repeats. It gives:

- `bare_fraction_of_peak`: the replayed matmuls' FLOP/s over the peak (the
  ceiling of a step made of nothing but those matmuls; its MFU is lower,
  as model FLOPs leave out attention's softmax and count no recomputation);
- `bare_fraction_of_step`: their seconds over the step's own seconds (the
  rest is the step's other work: activations, attention, norms, the
  optimizer, Python).
"""

import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_aten = torch.ops.aten
MATMULS = (_aten.mm.default, _aten.addmm.default, _aten.bmm.default)


class RecordMatmuls(TorchDispatchMode):
    """Records (op, left layout, right layout) of each matmul dispatched while active."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in MATMULS:
            left, right = args[1:3] if func is _aten.addmm.default else args[:2]
            self.calls.append((func, (left.shape, left.stride()), (right.shape, right.stride())))
        return func(*args, **(kwargs or {}))


def matmul_flops(call) -> int:
    """2 m n k of one recorded matmul (times the batch for bmm)."""
    func, (left, _), (right, _) = call
    if func is _aten.bmm.default:
        batch, m, k = left
        return 2 * batch * m * k * right[2]
    m, k = left
    return 2 * m * k * right[1]


def _operands(call) -> tuple:
    func, (left_shape, left_stride), (right_shape, right_stride) = call
    bare = torch.bmm if func is _aten.bmm.default else torch.mm
    left = torch.empty_strided(left_shape, left_stride).normal_()
    right = torch.empty_strided(right_shape, right_stride).normal_()
    return bare, left, right


def replay_seconds(calls: list, repeats: int = 3) -> float:
    """Best wall seconds of running every recorded matmul once, bare, in order."""
    work = [_operands(call) for call in calls]
    for bare, left, right in work[: min(len(work), 50)]:
        bare(left, right)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for bare, left, right in work:
            bare(left, right)
        best = min(best, time.perf_counter() - started)
    return best


def ceiling(step, batches: list) -> dict:
    """Run `step` on `batches` (already warmed up), timed, then recorded, then its matmuls bare.

    Seconds and FLOPs, not fractions: the caller divides by the peak it measures last.
    """
    started = time.perf_counter()
    for batch in batches:
        step(batch)
    step_seconds = time.perf_counter() - started
    recorder = RecordMatmuls()
    with recorder:
        for batch in batches:
            step(batch)
    bare_seconds = replay_seconds(recorder.calls)
    flops = sum(matmul_flops(call) for call in recorder.calls)
    return {
        "matmuls_per_step": len(recorder.calls) / len(batches),
        "matmul_flops_per_s_bare": flops / bare_seconds,
        "bare_fraction_of_step": bare_seconds / step_seconds,
    }


def add_fractions(stage: dict, peak_flops_per_s: float) -> None:
    """The stage's bare matmuls' FLOP/s as a fraction of the run's peak."""
    bare = stage["matmuls_alone"]
    bare["bare_fraction_of_peak"] = bare["matmul_flops_per_s_bare"] / peak_flops_per_s
