"""The math of PPO / PPO-ptx for a language-model policy, one function each.

Shapes: B sequences, T response tokens, V vocabulary. `mask` is 1 on response
tokens and 0 on padding after EOS; rows may have different lengths. Every
function reduces over valid tokens only, so padding never moves a loss or a
statistic. Rollout quantities (rewards, advantages, returns) are expected to
be computed on detached tensors, as in CleanRL's `ppo.py`.
"""

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

WHITEN_EPS = 1e-8


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of `x` over positions where `mask` is set (over all of them, or along `dim`).

    `torch.where` rather than `x * mask` so a NaN/inf on padding cannot leak in.
    """
    mask = mask.bool()
    total = torch.where(mask, x, torch.zeros_like(x))
    if dim is None:
        return total.sum() / mask.sum()
    return total.sum(dim) / mask.sum(dim)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of `x` over masked positions (Bessel-corrected if `unbiased`)."""
    mean = masked_mean(x, mask)
    variance = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        count = mask.bool().sum()
        if count < 2:
            raise ValueError("unbiased variance needs at least 2 valid positions")
        variance = variance * count / (count - 1)
    return variance


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True) -> Tensor:
    """Scale `x` to unit variance (and zero mean if `shift_mean`) over valid positions.

    Padding positions are returned UNCHANGED (the input value, not the whitened
    one), so e.g. zero advantages on padding stay zero.
    """
    mean = masked_mean(x, mask)
    variance = masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(variance + WHITEN_EPS)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask.bool(), whitened, x)


def _last_valid_index(mask: Tensor) -> Tensor:
    """Index [B] of the last valid token of each row (works with leading padding too)."""
    positions = torch.arange(mask.shape[1], device=mask.device)
    mask = mask.bool()
    if not mask.any(dim=1).all():
        raise ValueError("every row needs at least one valid response token")
    return torch.where(mask, positions, -1).amax(dim=1)


def kl_penalty_rewards(
    rm_score: Tensor, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, beta: float
) -> tuple[Tensor, Tensor]:
    """Per-token rewards of the RLHF bandit: a KL penalty on every token, the RM score at the end.

    reward_t = -beta * (log pi_RL(y_t) - log pi_SFT(y_t)) on every valid token,
    plus `rm_score` on the last valid token, the end of the episode.

    Returns:
        (rewards [B, T], kl [B, T]); both are 0 on padding.
    """
    valid = mask.bool()
    kl = torch.where(valid, logprobs - ref_logprobs, torch.zeros_like(logprobs))
    rewards = -beta * kl
    last = _last_valid_index(mask).unsqueeze(1)
    rewards = rewards.scatter_add(1, last, rm_score.to(rewards.dtype).unsqueeze(1))
    return rewards, kl


def gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over response tokens.

    delta_t = r_t + gamma * V_{t+1} - V_t and A_t = delta_t + gamma * lam * A_{t+1},
    where the step after the last valid token is terminal (V = 0, A = 0).
    Padding gets advantage 0. Returns (advantages, returns = advantages + values).
    """
    valid = mask.to(values.dtype)
    num_steps = rewards.shape[1]
    advantages = torch.zeros_like(values)
    next_advantage = torch.zeros_like(values[:, 0])
    for t in reversed(range(num_steps)):
        if t + 1 < num_steps:
            # 0 when t is the last valid token: the episode ends there.
            next_valid = valid[:, t + 1]
            next_value = values[:, t + 1]
        else:
            next_valid = torch.zeros_like(valid[:, t])
            next_value = torch.zeros_like(values[:, t])
        delta = rewards[:, t] + gamma * next_value * next_valid - values[:, t]
        next_advantage = (delta + gamma * lam * next_valid * next_advantage) * valid[:, t]
        advantages[:, t] = next_advantage
    return advantages, advantages + values


def clipped_policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip_eps: float = 0.2
) -> tuple[Tensor, Tensor, Tensor]:
    """PPO's clipped surrogate as a loss, with its two usual diagnostics.

    loss = masked mean of max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)):
    the pessimistic bound, so moving the ratio past the clip range in the
    direction the advantage favours earns nothing (zero gradient).

    Returns:
        (loss, clipfrac, approx_kl). clipfrac = share of tokens with |ratio - 1| > eps;
        approx_kl = masked mean of (ratio - 1) - log ratio, the k3 estimator of
        KL(old || new), which is unbiased and never negative. Both are detached.
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean(((ratio - 1.0).abs() > clip_eps).to(ratio.dtype), mask)
        approx_kl = masked_mean((ratio - 1.0) - log_ratio, mask)
    return loss, clipfrac, approx_kl


def clipped_value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_range: float = 0.2
) -> tuple[Tensor, Tensor]:
    """Value loss with PPO's value clipping: 0.5 * max((v - R)^2, (v_clip - R)^2), masked mean.

    v_clip = clip(v, old - c, old + c) keeps the value head from jumping far
    from the rollout estimate in one update.

    Returns:
        (loss, clipfrac); clipfrac = share of tokens with |v - old| > c, detached.
    """
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    squared = (values - returns) ** 2
    squared_clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(squared, squared_clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean(((values - old_values).abs() > clip_range).to(values.dtype), mask)
    return loss, clipfrac


def ptx_mixed_loss(ppo_loss: Tensor, ptx_lm_loss: Tensor | None, gamma: float) -> Tensor:
    """The PPO-ptx objective as a loss: ppo_loss + gamma * ptx_lm_loss.

    `ptx_lm_loss` is the mean NLL on a pretraining batch, so minimising this
    maximises gamma * E_pretrain[log pi(x)]. gamma = 0 is plain PPO: the PPO
    loss is returned as is and the ptx loss (possibly None) is never touched.
    """
    if gamma == 0:
        return ppo_loss
    if ptx_lm_loss is None:
        raise ValueError("gamma > 0 needs a pretraining LM loss")
    return ppo_loss + gamma * ptx_lm_loss


def lm_loss(logits: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Next-token mean NLL: logits at t predict token t+1, counted where both are real tokens.

    Requiring both positions to be real keeps left- and right-padded batches correct.
    """
    predicted = logits[:, :-1]
    targets = input_ids[:, 1:]
    valid = attention_mask[:, :-1].bool() & attention_mask[:, 1:].bool()
    targets = targets.masked_fill(~valid, -100)
    return F.cross_entropy(
        predicted.reshape(-1, predicted.shape[-1]), targets.reshape(-1), ignore_index=-100
    )


def logprobs_of(logits: Tensor, tokens: Tensor) -> Tensor:
    """log p(tokens) [B, T] under `logits` [B, T, V] (already aligned: no shift here).

    logit[token] - logsumexp(logits) avoids materialising a second [B, T, V]
    log-softmax tensor that would be kept for backward.
    """
    chosen = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return chosen - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy [B, T] of the categorical distribution given by `logits` [B, T, V]."""
    log_probs = torch.log_softmax(logits, dim=-1)
    return -(log_probs.exp() * log_probs).sum(dim=-1)


class KLController(Protocol):
    """What the PPO loop needs of a KL coefficient schedule."""

    beta: float

    def update(self, current_kl: float, n_steps: int) -> None: ...


class AdaptiveKLController:
    """Ziegler et al. (2019)'s proportional controller steering the policy's KL to a target.

    error = clip(KL / target - 1, -0.2, 0.2); beta *= 1 + error * n_steps / horizon.
    The clip bounds how fast beta moves when the KL is far from target.
    """

    def __init__(self, init_beta: float, target_kl: float, horizon: int) -> None:
        self.beta = init_beta
        self.target_kl = target_kl
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        """Move beta after a batch of `n_steps` samples whose mean KL was `current_kl`."""
        proportional_error = min(max(current_kl / self.target_kl - 1.0, -0.2), 0.2)
        self.beta *= 1.0 + proportional_error * n_steps / self.horizon


class FixedKLController:
    """A constant beta with the adaptive controller's interface."""

    def __init__(self, beta: float) -> None:
        self.beta = beta

    def update(self, current_kl: float, n_steps: int) -> None:
        """Leave beta unchanged."""
