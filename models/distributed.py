"""Data parallelism across the processes of one `accelerate launch`: who holds what, and what is summed.

Pure torch and Accelerate. Every process holds the whole data set and draws
the same global batches from the same seeded generators; each process then
works on its own contiguous shard of a batch, and whatever the math defines
over the whole batch (a mean over all tokens, advantage whitening, the KL
the controller sees) is summed across processes first. A mean of per-process
means would be wrong whenever shards hold unequal token counts.

Gradients are averaged across processes by DDP (Accelerate wraps a prepared
model in DistributedDataParallel), so a process's loss is its share of the
global sum times the number of processes, divided by the global count: the
average of those gradients is the gradient of the global mean.

With one process (`Group.size == 1`) nothing here communicates.
"""

import os
from collections.abc import Sequence

import torch
from accelerate import Accelerator

LAUNCHED_ENV = "INSTRUCTFLOW_LAUNCHED"
"""Set by instructflow.tasks.launch in the processes it starts: only there does RANK say who saves
(a scheduler may set RANK for a whole job that runs the pipeline in one process)."""


def main_process() -> bool:
    """True in the process that writes checkpoints and logs (rank 0 of a launch; always, without one)."""
    return os.environ.get(LAUNCHED_ENV) != "1" or int(os.environ.get("RANK", "0")) == 0


def bounds(n: int, size: int) -> list[int]:
    """Start of each of `size` contiguous shards of `n` items (and the end): sizes differ by at most 1."""
    base, extra = divmod(n, size)
    starts = [0]
    for rank in range(size):
        starts.append(starts[-1] + base + (1 if rank < extra else 0))
    return starts


class Group:
    """The processes of one training run, seen from one of them."""

    def __init__(self, accelerator: Accelerator | None = None) -> None:
        self.accelerator = accelerator
        self.size = accelerator.num_processes if accelerator is not None else 1
        self.rank = accelerator.process_index if accelerator is not None else 0

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over processes (a copy; the input is left alone)."""
        if self.size == 1:
            return tensor
        return self.accelerator.reduce(tensor.detach().clone(), reduction="sum")

    def sum_floats(self, *values: float) -> list[float]:
        """Several Python numbers summed over processes in one collective."""
        if self.size == 1:
            return list(values)
        device = self.accelerator.device
        return self.sum(torch.tensor(values, dtype=torch.float64, device=device)).tolist()

    def shard(self, items: Sequence) -> list:
        """This process's contiguous part of `items` (global order is rank 0's part, then rank 1's...)."""
        edges = bounds(len(items), self.size)
        return list(items[edges[self.rank] : edges[self.rank + 1]])

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate every process's [n_i, ...] tensor along dim 0, in rank order (n_i may differ)."""
        if self.size == 1:
            return tensor
        from accelerate.utils import gather_object

        parts = gather_object([tensor.detach().cpu()])
        return torch.cat(parts).to(tensor.device)

    def batch_shard(self, rows: Sequence) -> tuple[list, bool]:
        """This process's rows of a global batch, and whether they are real.

        A process whose shard is empty (a batch smaller than the number of
        processes) still runs forward and backward, on the batch's first row
        with weight 0: DDP's gradient all-reduce needs every process.
        """
        mine = self.shard(rows)
        return (mine, True) if mine else (list(rows[:1]), False)


def labelled_tokens(examples: Sequence[tuple[list[int], list[int]]]) -> int:
    """Positions an SFT batch is trained on (labels past the first column that are not -100)."""
    return sum(sum(1 for label in labels[1:] if label != -100) for _, labels in examples)


_ROW_BITS = 24  # a sampling call's rows: seed = base << 24 | global row index


def shard_seeds(generator: torch.Generator, group: Group, n: int) -> tuple[range, list[int]]:
    """This process's rows of a global batch of `n` and a sampling seed for each.

    One base seed per call comes from `generator` (seeded alike in every
    process, so the same there); a row's seed is the base and its global
    index, whichever process samples it.
    """
    base = int(torch.randint(0, 2**31, (1,), generator=generator))
    edges = bounds(n, group.size)
    rows = range(edges[group.rank], edges[group.rank + 1])
    return rows, [(base << _ROW_BITS) | row for row in rows]


def whiten(x: torch.Tensor, mask: torch.Tensor, group: Group, eps: float) -> torch.Tensor:
    """Zero mean, unit (unbiased) variance over the valid tokens of every process's rows.

    What `ppo_math.masked_whiten` does to one batch, for a batch split across
    processes; padding keeps its input value.
    """
    valid = mask.bool()
    count = group.sum(valid.sum().to(torch.float64))
    mean = group.sum(torch.where(valid, x, 0).sum().to(torch.float64)) / count
    centred = x - mean.to(x.dtype)
    squares = group.sum(torch.where(valid, centred**2, 0).sum().to(torch.float64))
    variance = squares / (count - 1)
    return torch.where(valid, centred * torch.rsqrt(variance.to(x.dtype) + eps), x)
