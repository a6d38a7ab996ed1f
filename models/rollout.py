"""A PPO rollout: sample responses (with the policy's log-probs), then score them once (SFT reference, reward model).

Token alignment (P = width of the left-padded prompt block, t = 0.. response
positions): the logit at column P-1+t predicts response token t, and the
value read at column P-1+t is the value of the state "prompt + response[:t]"
in which token t is chosen. `response_logits` and `PPOTrainer.values` read
both the same way (models/length_groups.py: over_responses).

Training rollouts (`rollout`) and held-out evaluation (`evaluate`) share the
sampling and scoring here; the trainer (models/ppo.py) owns the networks,
optimizers and random generators these functions read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from instructflow.models import ppo_math
from instructflow.models.distributed import shard_seeds, whiten
from instructflow.models.lm import context_length
from instructflow.models.numeric import check_finite
from instructflow.models.ppo_config import Normalization
from instructflow.models.reward_model import encode_for_reward, rewards
from instructflow.models.sampling import generate, sequence_logprobs

if TYPE_CHECKING:
    from instructflow.models.ppo import PPOTrainer


@dataclass
class Rollout:
    """Sampled responses and their scores; [B, L] tensors, L = longest response in the batch."""

    query_response: Tensor
    """[B, P+L] left-padded prompt, then the response."""
    attention_mask: Tensor
    """[B, P+L] 1 on prompt tokens and on response tokens up to the first EOS."""
    prompt_len: int
    """P: responses start at this column."""
    response_ids: Tensor
    mask: Tensor
    """[B, L] 1 on response tokens (up to and including EOS)."""
    texts: list[str]
    truncated: Tensor
    """[B] bool: no EOS within max_new_tokens."""
    logprobs: Tensor
    """log pi of each response token under the policy that sampled it (0 on padding)."""
    ref_logprobs: Tensor
    """log pi_SFT of each response token (0 on padding)."""
    rm_score: Tensor
    """[B] raw reward-model score of prompt + response (+ EOS)."""


@dataclass
class Experience(Rollout):
    """A training rollout with everything the update needs."""

    values: Tensor
    """V(state before each token) under the value model at rollout time."""
    score: Tensor
    """[B] the episode reward: normalised RM score minus the no-EOS penalty."""
    kl: Tensor
    """[B, L] log pi - log pi_SFT per token (0 on padding)."""
    rewards: Tensor
    """[B, L] -beta * kl on every token, plus `score` on the last one."""
    advantages: Tensor
    """[B, L] whitened GAE advantages."""
    returns: Tensor
    """[B, L] advantages (before whitening) + values: the value targets."""
    beta: float
    first_row: int = 0
    """Global index of this process's first row (its rows are a contiguous shard of the batch)."""
    global_lengths: Tensor | None = None
    """[global batch] response tokens of every process's rows (set on the sharded path)."""


@dataclass
class EvalResult:
    """The policy's samples on held-out prompts, scored by the RM and against the reference."""

    texts: list[str]
    rm_score: Tensor
    """[N] raw RM score."""
    kl: Tensor
    """[N] log pi(y|x) - log pi_SFT(y|x), summed over the response: a KL sample per prompt."""
    truncated: Tensor


@dataclass
class RewardNormalizer:
    """Mean/std of RM scores, merged batch by batch (Chan et al.'s parallel update)."""

    mode: Normalization
    mean: float = 0.0
    var: float = 1.0
    count: int = 0

    def update(self, scores: Tensor) -> None:
        n = scores.numel()
        batch_mean = float(scores.mean())
        batch_var = float(scores.var(unbiased=False)) if n > 1 else 0.0
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.mean, self.var, self.count = self.mean + delta * n / total, m2 / total, total

    def __call__(self, scores: Tensor) -> Tensor:
        if self.mode == "none":
            return scores
        return (scores - self.mean) / math.sqrt(self.var + 1e-8)


# ------------------------------------------------------------------ log-probs of responses


def trim(query_response: Tensor, attention_mask: Tensor, prompt_len: int, mask: Tensor):
    """Drop all-padding columns on both ends: left-pad columns no row uses, response columns past the longest."""
    width = int(mask.sum(1).max())
    first = int(attention_mask[:, :prompt_len].any(0).long().argmax())
    end = prompt_len + width
    return (
        query_response[:, first:end],
        attention_mask[:, first:end],
        prompt_len - first,
        width,
    )


@dataclass
class Minibatch:
    """Rows of an Experience, trimmed of the padding columns none of them uses."""

    rows: Tensor
    """Indices of the rows in the Experience."""
    query_response: Tensor
    attention_mask: Tensor
    prompt_len: int
    mask: Tensor
    """[b, width] 1 on response tokens; width = the longest response of these rows."""
    response_ids: Tensor
    """[b, width]"""


def minibatch(exp: Experience, rows: Tensor) -> Minibatch:
    """`rows` of `exp` as one minibatch of the PPO update."""
    qr, am, prompt_len, width = trim(
        exp.query_response[rows], exp.attention_mask[rows], exp.prompt_len, exp.mask[rows]
    )
    return Minibatch(
        rows, qr, am, prompt_len, exp.mask[rows, :width], exp.response_ids[rows, :width]
    )


# ------------------------------------------------------------------ sampling and scoring


def _sample(
    trainer: PPOTrainer, model, prompts: Sequence[str], row_seeds=None, with_logprobs=False
):
    """Sample one response per prompt (each row from its own seed, if given); return the trimmed rollout tensors."""
    hyper = trainer.hyper
    ro = generate(
        model,
        trainer.tokenizer,
        list(prompts),
        hyper.max_new_tokens,
        hyper.temperature,
        row_seeds=row_seeds,
        with_logprobs=with_logprobs,
    )
    qr, am, prompt_len, width = trim(
        ro.query_response, ro.attention_mask, ro.prompt_len, ro.response_mask
    )
    return ro, qr, am, prompt_len, ro.response_ids[:, :width], ro.response_mask[:, :width]


def _ref_logprobs(
    trainer: PPOTrainer, qr: Tensor, am: Tensor, prompt_len: int, response_ids: Tensor, mask
) -> Tensor:
    temperature = trainer.hyper.temperature
    with trainer.reference() as ref_policy:  # with LoRA: the policy's adapters off
        return sequence_logprobs(ref_policy, qr, am, prompt_len, response_ids, mask, temperature)


def _context_or_unbounded(model) -> float:
    """The model's context, or no limit for one that names none (a scoring function)."""
    try:
        return context_length(model)
    except ValueError:
        return math.inf


def rm_scores(
    trainer: PPOTrainer,
    prompts: Sequence[str],
    texts: list[str],
    qr: Tensor,
    am: Tensor,
    truncated: Tensor,
) -> Tensor:
    """[B] raw RM score of prompt + response + EOS (negated when `invert_reward`).

    A response cut off at the length limit has no EOS; one is appended for
    the RM (it was trained on EOS-terminated text), and the no-EOS penalty
    is applied separately.
    """
    if not trainer.rm_reads_policy_ids:
        with trainer.frozen_reward_model() as reward_model:
            max_len = context_length(reward_model)
            ids, mask = encode_for_reward(
                trainer.rm_tokenizer, list(prompts), texts, max_len, cut_responses=True
            )
            scores = rewards(reward_model, ids.to(qr.device), mask.to(qr.device))
    else:
        eos = torch.full_like(qr[:, :1], trainer.tokenizer.eos_token_id)
        pad = torch.full_like(qr[:, :1], trainer.tokenizer.pad_token_id)
        extra_ids = torch.where(truncated.unsqueeze(1), eos, pad)
        ids = torch.cat([qr, extra_ids], dim=1)
        mask = torch.cat([am, truncated.unsqueeze(1).to(am.dtype)], dim=1)
        with trainer.frozen_reward_model() as reward_model:
            # A prompt that fills the context up to the sampling room leaves a cut-off response
            # no room for the EOS: its last token gives way to it, as encode_for_reward cuts a
            # response scored from its text (appended, it read past the context: IndexError)
            over = mask.sum(1) > _context_or_unbounded(reward_model)
            if over.any():
                ids[over, -2] = trainer.tokenizer.eos_token_id
                mask[over, -1] = 0
            scores = rewards(reward_model, ids, mask)
    scores = scores.float()
    return -scores if trainer.hyper.invert_reward else scores


@torch.no_grad()
def fit_reward_normalizer(trainer: PPOTrainer, prompts: Sequence[str]) -> None:
    """Score SFT samples on up to `reference_samples` prompts: the statistics that normalise the RM score."""
    hyper = trainer.hyper
    if hyper.reward_normalization == "none":
        return
    n = min(hyper.reference_samples, len(prompts))
    chosen = [
        prompts[i] for i in torch.randperm(len(prompts), generator=trainer.generator)[:n].tolist()
    ]
    scores = []
    for start in range(0, n, hyper.rollout_batch):
        batch, seeds = chosen[start : start + hyper.rollout_batch], None
        if trainer.row_seeded:  # this process's rows of the batch (models/ppo_shards.py)
            rows, seeds = shard_seeds(trainer.generator, trainer.group, len(batch))
            batch = [batch[i] for i in rows]
            if not batch:
                continue
        with trainer.reference() as ref_policy:
            ro, qr, am, _, _, _ = _sample(trainer, ref_policy, batch, seeds)
        scores.append(rm_scores(trainer, batch, ro.texts, qr, am, ro.truncated))
    mine = torch.cat(scores) if scores else torch.empty(0)
    trainer.normalizer.update(trainer.group.gather(mine) if trainer.row_seeded else mine)
    trainer.value_shift, trainer.value_scale = (
        trainer.normalizer.mean,
        math.sqrt(trainer.normalizer.var + 1e-8),
    )


@torch.no_grad()
def rollout(trainer: PPOTrainer, prompts: Sequence[str]) -> Experience:
    """Sample responses and turn them into per-token rewards, advantages and returns."""
    hyper, group, seeds, first = trainer.hyper, trainer.group, None, 0
    if trainer.row_seeded:  # this process's contiguous rows of the batch (models/ppo_shards.py)
        rows, seeds = shard_seeds(trainer.generator, group, len(prompts))
        prompts, first = [prompts[i] for i in rows], rows.start
    # The policy's log-probs come with the samples (from generation's own logits, as
    # TRL takes them): one forward pass fewer than scoring the batch again. One
    # thread, so that they are the same numbers whatever the run's thread count.
    with trainer.side.one_thread():
        ro, qr, am, prompt_len, response_ids, mask = _sample(
            trainer, trainer.unwrapped_policy, prompts, seeds, with_logprobs=True
        )
    logprobs = ro.logprobs[:, : response_ids.shape[1]]
    ref_logprobs, (values, rm_score) = trainer.side.both(
        partial(_ref_logprobs, trainer, qr, am, prompt_len, response_ids, mask),
        lambda: (
            trainer.values(qr, am, prompt_len, response_ids.shape[1]) * mask,
            rm_scores(trainer, prompts, ro.texts, qr, am, ro.truncated),
        ),
    )

    if hyper.reward_normalization == "running":
        trainer.normalizer.update(group.gather(rm_score) if trainer.row_seeded else rm_score)
    score = trainer.normalizer(rm_score) - hyper.no_eos_penalty * ro.truncated.float()
    beta = trainer.kl_ctl.beta
    token_rewards, kl = ppo_math.kl_penalty_rewards(score, logprobs, ref_logprobs, mask, beta)
    advantages, returns = ppo_math.gae(token_rewards, values, mask, hyper.gamma, hyper.gae_lambda)
    if trainer.row_seeded:  # over the whole batch, every process's rows
        advantages = whiten(advantages, mask, group, ppo_math.WHITEN_EPS)
    else:
        advantages = ppo_math.masked_whiten(advantages, mask)
    check_finite("reward (RM score)", trainer.iteration, rm_score, "iteration")
    check_finite("advantage", trainer.iteration, advantages, "iteration")
    return Experience(
        query_response=qr,
        attention_mask=am,
        prompt_len=prompt_len,
        response_ids=response_ids,
        mask=mask,
        logprobs=logprobs,
        ref_logprobs=ref_logprobs,
        values=values,
        rm_score=rm_score,
        score=score,
        kl=kl,
        rewards=token_rewards,
        advantages=advantages,
        returns=returns,
        truncated=ro.truncated,
        texts=ro.texts,
        beta=beta,
        first_row=first,
        global_lengths=group.gather(mask.sum(1)) if trainer.row_seeded else None,
    )


@torch.no_grad()
def evaluate(
    trainer: PPOTrainer, prompts: Sequence[str], seed: int, batch_size: int = 128
) -> EvalResult:
    """Sample the current policy on `prompts` (under its own seed: training RNG untouched)."""
    texts, scores, kls, truncated = [], [], [], []
    device = trainer.accelerator.device
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for start in range(0, len(prompts), batch_size):
            batch = list(prompts[start : start + batch_size])
            with trainer.side.one_thread():
                ro, qr, am, prompt_len, response_ids, mask = _sample(
                    trainer, trainer.unwrapped_policy, batch, with_logprobs=True
                )
            logprobs = ro.logprobs[:, : response_ids.shape[1]]
            ref_logprobs, score = trainer.side.both(
                partial(_ref_logprobs, trainer, qr, am, prompt_len, response_ids, mask),
                partial(rm_scores, trainer, batch, ro.texts, qr, am, ro.truncated),
            )
            texts += ro.texts
            scores.append(score)
            kls.append((logprobs - ref_logprobs).sum(1))
            truncated.append(ro.truncated)
    return EvalResult(texts, torch.cat(scores), torch.cat(kls), torch.cat(truncated))
