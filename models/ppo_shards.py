"""PPO with the rollout batch split across the processes of an `accelerate launch`.

Every process draws the same prompts, minibatch orders and pretraining rows
from the trainer's seeded generator, then works on its contiguous shard:

- sampling: each row from its own seeded generator (`RowSeededSampling`),
  so a response does not depend on how the batch was split;
- rewards, KL penalty, GAE: per row, local;
- summed across processes: advantage whitening (mean and variance over the
  whole batch's tokens), the reward normaliser's statistics, the batch KL
  the KL controller sees, every logged mean, and each minibatch's loss,
  which is the mean over the whole minibatch's tokens (a process's share
  is its token sum over the global count; DDP averages the N gradients,
  hence the factor N).

Sampling seeds and the whitening are in instructflow.models.distributed.
The trainer takes this path when it runs in more than one process, or when
asked to (`PPOTrainer(row_seeded=True)`): one process then computes what N
processes compute, which is how the equivalence is tested. Validation
evaluation is not split: every process evaluates the same prompts with the
same seed and reaches the same stopping decision.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from instructflow.models import ppo_math
from instructflow.models.rollout import Experience, minibatch

if TYPE_CHECKING:
    from instructflow.models.ppo import PPOTrainer


def batch_metrics(trainer: PPOTrainer, exp: Experience) -> dict[str, float]:
    """Means over every process's rows of what `PPOTrainer.step` reports, and the batch KL."""
    seq_kl = exp.kl.sum(1)
    sums = trainer.group.sum_floats(
        float(exp.rm_score.sum()),
        float(exp.score.sum()),
        float(seq_kl.sum()),
        float(exp.mask.sum()),
        float(exp.truncated.float().sum()),
        float(len(exp.texts)),
    )
    rm, score, kl, tokens, truncated, n = sums
    return {
        "ppo/reward_rm": rm / n,
        "ppo/score": score / n,
        "ppo/kl": kl / n,
        "ppo/response_len": tokens / n,
        "ppo/no_eos_fraction": truncated / n,
    }


def _local_rows(rows: Tensor, first: int, count: int) -> tuple[Tensor, bool]:
    """Which of a global minibatch's rows this process holds (local indices); a stand-in row if none."""
    mine = rows[(rows >= first) & (rows < first + count)] - first
    return (mine, True) if mine.numel() else (torch.zeros(1, dtype=torch.long), False)


def update(trainer: PPOTrainer, exp: Experience, ptx_blocks: Tensor | None) -> dict[str, float]:
    """`PPOTrainer.update` over global minibatches of which each process holds some rows."""
    hyper, group = trainer.hyper, trainer.group
    if trainer.ptx_gamma > 0 and ptx_blocks is None:
        raise ValueError("ptx_gamma > 0 needs pretraining blocks")
    lengths = exp.global_lengths  # [global batch] response tokens of every process's rows
    names = ("policy_loss", "value_loss", "clipfrac", "approx_kl", "entropy", "value_clipfrac")
    sums = dict.fromkeys([*names, "ptx_loss"], 0.0)
    steps = 0
    for _ in range(hyper.ppo_epochs):
        order = torch.randperm(len(lengths), generator=trainer.generator)
        for rows in order.split(hyper.minibatch_size):
            local, real = _local_rows(rows, exp.first_row, exp.response_ids.shape[0])
            mb = minibatch(exp, local)
            # This process's part of the minibatch's token mean (0 for a stand-in row).
            weight = float(mb.mask.sum()) / float(lengths[rows].sum()) if real else 0.0

            logits, policy_loss, clipfrac, approx_kl = trainer.surrogate(exp, mb)
            loss, ptx_share = policy_loss * weight, torch.zeros(())
            if trainer.ptx_gamma > 0:
                ptx_share = _ptx_share(trainer, ptx_blocks)
                loss = loss + trainer.ptx_gamma * ptx_share
            trainer._optimizer_step(loss * group.size, trainer.policy, trainer.policy_opt, "policy")
            with torch.no_grad():
                entropy = ppo_math.masked_mean(ppo_math.entropy_from_logits(logits), mb.mask)

            value_loss, value_clipfrac = trainer.value_loss(exp, mb)
            trainer._optimizer_step(
                value_loss * weight * group.size, trainer.value_net, trainer.value_opt, "value"
            )
            parts = (policy_loss, value_loss, clipfrac, approx_kl, entropy, value_clipfrac)
            totals = group.sum_floats(
                *(float(p.detach()) * weight for p in parts), float(ptx_share.detach())
            )
            for name, total in zip([*names, "ptx_loss"], totals, strict=True):
                sums[name] += total
            steps += 1
    means = {f"ppo/{name}": total / steps for name, total in sums.items()}
    if trainer.ptx_gamma == 0:
        means["ppo/ptx_loss"] = float("nan")
    return means


def _ptx_share(trainer: PPOTrainer, ptx_blocks: Tensor) -> Tensor:
    """This process's part of the mean LM loss on the step's pretraining rows (drawn alike everywhere)."""
    size = trainer.hyper.ptx_batch_size
    rows = torch.randint(0, ptx_blocks.shape[0], (size,), generator=trainer.generator).tolist()
    mine, real = trainer.group.batch_shard(rows)
    block = ptx_blocks[mine].to(trainer.accelerator.device)
    logits = trainer.policy(input_ids=block, use_cache=False).logits
    loss = ppo_math.lm_loss(logits.float(), block, torch.ones_like(block))
    return loss * (len(mine) / size if real else 0.0)
