"""PPO and PPO-ptx for a language-model policy: the InstructGPT RL stage, readable top to bottom.

The environment is a bandit: a random prompt, the policy's sampled response,
the reward model's score at the end of the episode. One iteration is

1. rollout (no gradients): sample responses for `rollout_batch` prompts
   (KV-cached, batched), then ONE batched forward each for the policy's
   log-probs, the frozen SFT reference's log-probs, the value model's values
   and the reward model's score;
2. rewards: the (normalised) RM score on the last response token, minus a
   penalty if the response hit the length limit without EOS, and
   -beta * (log pi - log pi_SFT) on every token (`ppo_math.kl_penalty_rewards`);
3. GAE advantages (whitened over the batch) and returns;
4. `ppo_epochs` passes over shuffled minibatches: clipped surrogate for the
   policy (plus gamma * pretraining LM loss for PPO-ptx), clipped value loss
   for the value model, each with its own AdamW optimizer;
5. the KL controller sees the batch's KL (adaptive beta, or fixed).

Token alignment (P = width of the left-padded prompt block, t = 0.. response
positions): the logit at column P-1+t predicts response token t, and the
value read at column P-1+t is the value of the state "prompt + response[:t]"
in which token t is chosen. Both are sliced the same way from one forward.

Dropout: every network runs in eval mode, also while it is trained, so the
importance ratio is exactly 1 on the first minibatch of an update (the ratio
would otherwise measure dropout noise, not policy change).

No Prefect, no MLflow: progress, monitoring (gold score) and checkpoints go
to callbacks that the caller (tasks/ppo.py) supplies.
"""

import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from functools import partial
from typing import Literal

import torch
from peft import PeftModel
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from models import ppo_math
from models.checkpoints import interrupt, stop_requested
from models.lm import context_length
from models.lora import adapters_off, trainable_parameters
from models.numeric import check_finite
from models.reward_model import encode_for_reward, rewards, token_values
from models.runtime import Precision, make_accelerator
from models.sampling import generate, position_ids_from_mask
from models.side_thread import SideThread

Normalization = Literal["none", "running", "reference"]

METRIC_KEYS = (
    "ppo/reward_rm",
    "ppo/reward_gold",
    "ppo/kl",
    "ppo/approx_kl",
    "ppo/clipfrac",
    "ppo/entropy",
    "ppo/value_loss",
    "ppo/policy_loss",
    "ppo/ptx_loss",
    "ppo/response_len",
    "ppo/beta",
    "ppo/no_eos_fraction",
)
"""Keys every iteration's metrics carry (more diagnostics ride along)."""


@dataclass(frozen=True)
class PPOHyper:
    """Hyperparameters of PPO / PPO-ptx (defaults: a reasonable start for a small model)."""

    iterations: int = 100
    """Rollout + update cycles to run."""
    rollout_batch: int = 64
    """Prompts sampled (one response each) per iteration."""
    minibatch_size: int = 16
    """Responses per gradient step; `rollout_batch / minibatch_size` steps per epoch."""
    ppo_epochs: int = 4
    """Passes over each rollout batch (reusing samples is what the clip makes safe)."""
    lr: float = 2e-5
    """Policy learning rate (AdamW, constant)."""
    value_lr: float = 1e-4
    """Value-model learning rate (its own AdamW, constant)."""
    weight_decay: float = 0.0
    """AdamW weight decay of both optimizers (0: stay close to the initialisation)."""
    clip_eps: float = 0.2
    """Surrogate clip range: ratios outside [1 - eps, 1 + eps] earn nothing."""
    value_clip: float = 0.2
    """Value clip range: the value may move at most this far from its rollout value per update."""
    gae_lambda: float = 0.95
    """GAE lambda (bias/variance of advantages)."""
    gamma: float = 1.0
    """Discount per token (1: the episode is one short response)."""
    kl_beta: float = 0.05
    """KL penalty coefficient beta (the initial value when `adaptive_kl`)."""
    adaptive_kl: bool = False
    """Steer beta so that the batch KL tracks `target_kl` (Ziegler et al. 2019)."""
    target_kl: float = 6.0
    """Target KL(pi || pi_SFT) per response, in nats, for the adaptive controller."""
    kl_horizon: int = 10000
    """Adaptive controller horizon in samples: larger moves beta more slowly."""
    ptx_gamma: float = 0.0
    """Weight of the pretraining LM loss mixed into every policy step (0: plain PPO)."""
    ptx_batch_size: int = 8
    """Packed pretraining blocks per policy step when `ptx_gamma > 0`."""
    max_new_tokens: int = 24
    """Longest response sampled."""
    temperature: float = 1.0
    """Sampling temperature; log-probs are computed at the same temperature."""
    no_eos_penalty: float = 1.0
    """Subtracted from the (normalised) score of a response that ends without EOS."""
    reward_normalization: Normalization = "reference"
    """RM score scaling. "reference": (score - mean) / std of the SFT policy's own samples,
    fixed at the start (a stationary reward); "running": the same stats, updated with every
    rollout; "none": the raw RM score (centred on demonstrations by the RM stage)."""
    invert_reward: bool = False
    """Train against the negated RM score: a deliberately worse policy, the candidate a
    promotion gate must never accept. Checkpoint choice sees the negated score too."""
    reference_samples: int = 256
    """SFT samples that fit the "reference"/"running" statistics at the start."""
    grad_clip: float = 1.0
    """Max global gradient norm, per network."""
    seed: int = 0
    """Seeds sampling, prompt order, minibatch order and ptx blocks."""
    precision: Precision = "fp32"
    """Autocast precision of the trained networks' forward passes (models.runtime)."""

    def __post_init__(self) -> None:
        if self.reward_normalization not in ("none", "running", "reference"):
            raise ValueError(f"unknown reward_normalization {self.reward_normalization!r}")
        if self.minibatch_size > self.rollout_batch:
            raise ValueError("minibatch_size cannot exceed rollout_batch")
        if self.ptx_gamma < 0:
            raise ValueError("ptx_gamma must be >= 0")


def hyper_field_names() -> list[str]:
    """Names of PPOHyper's fields (a stage config copies the ones it shares)."""
    return [f.name for f in fields(PPOHyper)]


# ------------------------------------------------------------------ reward normalisation


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


# ------------------------------------------------------------------ rollout data


@dataclass
class Experience:
    """One rollout batch with everything the update needs; [B, L] tensors, L = longest response."""

    query_response: Tensor
    """[B, P+L] left-padded prompt, then the response."""
    attention_mask: Tensor
    """[B, P+L] 1 on prompt tokens and on response tokens up to the first EOS."""
    prompt_len: int
    """P: responses start at this column."""
    response_ids: Tensor
    mask: Tensor
    """[B, L] 1 on response tokens (up to and including EOS)."""
    logprobs: Tensor
    """log pi_old of each response token (0 on padding)."""
    ref_logprobs: Tensor
    """log pi_SFT of each response token (0 on padding)."""
    values: Tensor
    """V(state before each token) under the value model at rollout time."""
    rm_score: Tensor
    """[B] raw reward-model score of prompt + response (+ EOS)."""
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
    truncated: Tensor
    """[B] bool: no EOS within max_new_tokens."""
    texts: list[str]
    beta: float


@dataclass
class EvalResult:
    """The policy's samples on held-out prompts, scored by the RM and against the reference."""

    texts: list[str]
    rm_score: Tensor
    """[N] raw RM score."""
    kl: Tensor
    """[N] log pi(y|x) - log pi_SFT(y|x), summed over the response: a KL sample per prompt."""
    truncated: Tensor


def _trim(query_response: Tensor, attention_mask: Tensor, prompt_len: int, mask: Tensor):
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


class _ValueNet(torch.nn.Module):
    """token_values as a module forward, so Accelerate can wrap it like any model."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return token_values(self.model, input_ids, attention_mask)


def _shares_vocabulary(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """True if every token of `a` has the same id in `b` (b may add tokens, e.g. a pad)."""
    vocab_b = b.get_vocab()
    return all(vocab_b.get(token) == index for token, index in a.get_vocab().items())


# ------------------------------------------------------------------ the trainer


class PPOTrainer:
    """Policy, value model, their optimizers and the KL controller; one `step` per iteration.

    `policy` and `value_model` are trained; `ref_policy` (the SFT model) and
    `reward_model` are frozen. The value model is a scalar-head model read
    with `models.reward_model.token_values` (initialise it from the RM) and
    must use the policy's token ids; the reward model may use another
    tokenizer (`rm_tokenizer`), in which case responses are re-encoded as text.

    With LoRA, `policy` and `value_model` are `PeftModel`s (models.lora) and
    `ref_policy` / `reward_model` may be None: the reference is then the
    policy with its adapters off, and the reward model the value model with
    its adapters off (the value model starts as the RM). No network is held
    twice; only adapters (and the value head) train.
    """

    def __init__(
        self,
        policy: PreTrainedModel,
        ref_policy: PreTrainedModel,
        value_model: PreTrainedModel,
        reward_model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        rm_tokenizer: PreTrainedTokenizerBase | None,
        hyper: PPOHyper,
    ) -> None:
        self.hyper = hyper
        self.tokenizer = tokenizer
        self.rm_tokenizer = rm_tokenizer or tokenizer
        self.rm_reads_policy_ids = _shares_vocabulary(tokenizer, self.rm_tokenizer)
        self.accelerator = make_accelerator(hyper.precision)
        device = self.accelerator.device
        # With 2+ CPU threads: value-model work beside policy work, one core each.
        self.side = SideThread(device)
        torch.manual_seed(hyper.seed)
        self.generator = torch.Generator().manual_seed(hyper.seed)

        # The PeftModels are kept only to switch adapters off and to merge them;
        # training reads the inner Hugging Face networks, which carry the adapters.
        self.policy_adapters = policy if isinstance(policy, PeftModel) else None
        self.value_adapters = value_model if isinstance(value_model, PeftModel) else None
        if self.policy_adapters is not None:
            policy = policy.get_base_model()
        if self.value_adapters is not None:
            value_model = value_model.get_base_model()
        if ref_policy is None and self.policy_adapters is None:
            raise ValueError("ref_policy is needed unless the policy carries LoRA adapters")
        if reward_model is None and self.value_adapters is None:
            raise ValueError("reward_model is needed unless the value model carries LoRA adapters")
        for frozen in (ref_policy, reward_model):
            if frozen is not None:
                frozen.requires_grad_(False)
                frozen.eval().to(device)
        self.ref_policy, self.reward_model = ref_policy, reward_model
        policy.eval()
        value_model.eval()
        policy_opt = torch.optim.AdamW(
            trainable_parameters(policy), lr=hyper.lr, weight_decay=hyper.weight_decay
        )
        value_opt = torch.optim.AdamW(
            trainable_parameters(value_model), lr=hyper.value_lr, weight_decay=hyper.weight_decay
        )
        self.policy, self.value_net, self.policy_opt, self.value_opt = self.accelerator.prepare(
            policy, _ValueNet(value_model), policy_opt, value_opt
        )

        self.kl_ctl: ppo_math.KLController = (
            ppo_math.AdaptiveKLController(hyper.kl_beta, hyper.target_kl, hyper.kl_horizon)
            if hyper.adaptive_kl
            else ppo_math.FixedKLController(hyper.kl_beta)
        )
        self.normalizer = RewardNormalizer(hyper.reward_normalization)
        # The value model starts as the RM, on the RM's raw scale; when rewards are
        # normalised, its outputs are read through the same (fixed) affine map so
        # that V starts on the scale of the returns it has to predict.
        self.value_shift, self.value_scale = 0.0, 1.0
        self.iteration = 0
        """Iterations completed so far (the next one to run has this index)."""
        self.stopped = False
        """Set when the caller asked to stop early; ppo_train does not continue a stopped run."""

    # -------------------------------------------------------------- networks

    @property
    def unwrapped_policy(self) -> PreTrainedModel:
        return self.accelerator.unwrap_model(self.policy)

    @property
    def unwrapped_value_model(self) -> PreTrainedModel:
        return self.accelerator.unwrap_model(self.value_net).model

    @contextmanager
    def reference(self) -> Iterator[PreTrainedModel]:
        """The frozen SFT policy: its own network, or the policy with its adapters off."""
        if self.ref_policy is not None:
            yield self.ref_policy
        else:
            with adapters_off(self.policy_adapters):
                yield self.unwrapped_policy

    @contextmanager
    def frozen_reward_model(self) -> Iterator[PreTrainedModel]:
        """The frozen RM: its own network, or the value model with its adapters off."""
        if self.reward_model is not None:
            yield self.reward_model
        else:
            with adapters_off(self.value_adapters):
                yield self.unwrapped_value_model

    def policy_weights(self) -> dict[str, Tensor]:
        """A detached copy of what training changes in the policy (adapters only, with LoRA)."""
        policy = self.unwrapped_policy
        if self.policy_adapters is None:
            return {k: v.detach().clone() for k, v in policy.state_dict().items()}
        return {k: v.detach().clone() for k, v in policy.named_parameters() if v.requires_grad}

    def load_policy_weights(self, weights: dict[str, Tensor]) -> None:
        self.unwrapped_policy.load_state_dict(weights, strict=self.policy_adapters is None)

    def _response_logits(
        self, model, query_response: Tensor, attention_mask: Tensor, prompt_len: int, width: int
    ) -> Tensor:
        """[B, width, V] logits (at the sampling temperature) that predict the response tokens."""
        # The last column predicts nothing we score: leave it out of the forward.
        ids, mask = query_response[:, :-1], attention_mask[:, :-1]
        logits = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids_from_mask(mask),
            use_cache=False,
        ).logits
        return logits[:, prompt_len - 1 : prompt_len - 1 + width].float() / self.hyper.temperature

    def _values(
        self, query_response: Tensor, attention_mask: Tensor, prompt_len: int, width: int
    ) -> Tensor:
        """[B, width] value of the state in which each response token is chosen (same columns as the logits)."""
        values = self.value_net(query_response[:, :-1], attention_mask[:, :-1])
        values = values[:, prompt_len - 1 : prompt_len - 1 + width].float()
        return (values - self.value_shift) / self.value_scale

    def _logprobs(
        self, model, qr: Tensor, am: Tensor, prompt_len: int, response_ids: Tensor, mask: Tensor
    ) -> Tensor:
        logits = self._response_logits(model, qr, am, prompt_len, response_ids.shape[1])
        logprobs = ppo_math.logprobs_of(logits, response_ids)
        return torch.where(mask.bool(), logprobs, torch.zeros_like(logprobs))

    def _policy_and_ref_logprobs(
        self, qr: Tensor, am: Tensor, prompt_len: int, response_ids: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        logprobs = self._logprobs(self.policy, qr, am, prompt_len, response_ids, mask)
        with self.reference() as ref_policy:  # with LoRA: the policy's adapters off
            return logprobs, self._logprobs(ref_policy, qr, am, prompt_len, response_ids, mask)

    def _rm_scores(
        self, prompts: Sequence[str], texts: list[str], qr: Tensor, am: Tensor, truncated: Tensor
    ) -> Tensor:
        """[B] raw RM score of prompt + response + EOS.

        A response cut off at the length limit has no EOS; one is appended for
        the RM (it was trained on EOS-terminated text), and the no-EOS penalty
        is applied separately.
        """
        if not self.rm_reads_policy_ids:
            with self.frozen_reward_model() as reward_model:
                max_len = context_length(reward_model)
                ids, mask = encode_for_reward(self.rm_tokenizer, list(prompts), texts, max_len)
                scores = rewards(reward_model, ids.to(qr.device), mask.to(qr.device))
            return self._signed(scores.float())
        eos = torch.full_like(qr[:, :1], self.tokenizer.eos_token_id)
        pad = torch.full_like(qr[:, :1], self.tokenizer.pad_token_id)
        extra_ids = torch.where(truncated.unsqueeze(1), eos, pad)
        ids = torch.cat([qr, extra_ids], dim=1)
        mask = torch.cat([am, truncated.unsqueeze(1).to(am.dtype)], dim=1)
        with self.frozen_reward_model() as reward_model:
            scores = rewards(reward_model, ids, mask)
        return self._signed(scores.float())

    def _signed(self, scores: Tensor) -> Tensor:
        return -scores if self.hyper.invert_reward else scores

    # -------------------------------------------------------------- rollout

    def _sample(self, model, prompts: Sequence[str]):
        """Sample one response per prompt; return the trimmed rollout tensors."""
        ro = generate(
            model, self.tokenizer, list(prompts), self.hyper.max_new_tokens, self.hyper.temperature
        )
        qr, am, prompt_len, width = _trim(
            ro.query_response, ro.attention_mask, ro.prompt_len, ro.response_mask
        )
        return ro, qr, am, prompt_len, ro.response_ids[:, :width], ro.response_mask[:, :width]

    @torch.no_grad()
    def fit_reward_normalizer(self, prompts: Sequence[str]) -> None:
        """Score SFT samples on up to `reference_samples` prompts: the statistics that normalise the RM score."""
        if self.hyper.reward_normalization == "none":
            return
        n = min(self.hyper.reference_samples, len(prompts))
        chosen = [
            prompts[i] for i in torch.randperm(len(prompts), generator=self.generator)[:n].tolist()
        ]
        scores = []
        for start in range(0, n, self.hyper.rollout_batch):
            batch = chosen[start : start + self.hyper.rollout_batch]
            with self.reference() as ref_policy:
                ro, qr, am, _, _, _ = self._sample(ref_policy, batch)
            scores.append(self._rm_scores(batch, ro.texts, qr, am, ro.truncated))
        self.normalizer.update(torch.cat(scores))
        self.value_shift, self.value_scale = (
            self.normalizer.mean,
            math.sqrt(self.normalizer.var + 1e-8),
        )

    @torch.no_grad()
    def rollout(self, prompts: Sequence[str]) -> Experience:
        """Sample responses and turn them into per-token rewards, advantages and returns."""
        hyper = self.hyper
        ro, qr, am, prompt_len, response_ids, mask = self._sample(self.unwrapped_policy, prompts)
        (logprobs, ref_logprobs), (values, rm_score) = self.side.both(
            partial(self._policy_and_ref_logprobs, qr, am, prompt_len, response_ids, mask),
            lambda: (
                self._values(qr, am, prompt_len, response_ids.shape[1]) * mask,
                self._rm_scores(prompts, ro.texts, qr, am, ro.truncated),
            ),
        )

        if hyper.reward_normalization == "running":
            self.normalizer.update(rm_score)
        score = self.normalizer(rm_score) - hyper.no_eos_penalty * ro.truncated.float()
        beta = self.kl_ctl.beta
        token_rewards, kl = ppo_math.kl_penalty_rewards(score, logprobs, ref_logprobs, mask, beta)
        advantages, returns = ppo_math.gae(
            token_rewards, values, mask, hyper.gamma, hyper.gae_lambda
        )
        advantages = ppo_math.masked_whiten(advantages, mask)
        check_finite("reward (RM score)", self.iteration, rm_score)
        check_finite("advantage", self.iteration, advantages)
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
        )

    # -------------------------------------------------------------- update

    def _ptx_loss(self, ptx_blocks: Tensor) -> Tensor:
        """Mean next-token loss of the policy on a random batch of packed pretraining blocks."""
        rows = torch.randint(
            0, ptx_blocks.shape[0], (self.hyper.ptx_batch_size,), generator=self.generator
        )
        block = ptx_blocks[rows].to(self.accelerator.device)
        logits = self.policy(input_ids=block, use_cache=False).logits
        return ppo_math.lm_loss(logits.float(), block, torch.ones_like(block))

    def _optimizer_step(self, loss: Tensor, net: torch.nn.Module, optimizer, name: str) -> None:
        check_finite(f"{name} loss", self.iteration, loss)
        self.accelerator.backward(loss)
        norm = self.accelerator.clip_grad_norm_(net.parameters(), self.hyper.grad_clip)
        check_finite(f"{name} gradient norm", self.iteration, norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def _policy_step(
        self,
        exp: Experience,
        rows: Tensor,
        qr: Tensor,
        am: Tensor,
        prompt_len: int,
        mask: Tensor,
        response_ids: Tensor,
        ptx_blocks: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor]:
        """One clipped-surrogate step (plus ptx) on a minibatch; its loss terms and entropy."""
        hyper, width = self.hyper, mask.shape[1]
        logits = self._response_logits(self.policy, qr, am, prompt_len, width)
        logprobs = ppo_math.logprobs_of(logits, response_ids)
        policy_loss, clipfrac, approx_kl = ppo_math.clipped_policy_loss(
            logprobs,
            exp.logprobs[rows, :width],
            exp.advantages[rows, :width],
            mask,
            hyper.clip_eps,
        )
        ptx_loss = self._ptx_loss(ptx_blocks) if hyper.ptx_gamma > 0 else None
        loss = ppo_math.ptx_mixed_loss(policy_loss, ptx_loss, hyper.ptx_gamma)
        self._optimizer_step(loss, self.policy, self.policy_opt, "policy")
        with torch.no_grad():
            entropy = ppo_math.masked_mean(ppo_math.entropy_from_logits(logits), mask)
        return policy_loss, clipfrac, approx_kl, ptx_loss, entropy

    def _value_step(
        self, exp: Experience, rows: Tensor, qr: Tensor, am: Tensor, prompt_len: int, mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """One clipped value-loss step on a minibatch (no random numbers: may run in a side thread)."""
        width = mask.shape[1]
        values = self._values(qr, am, prompt_len, width)
        value_loss, value_clipfrac = ppo_math.clipped_value_loss(
            values,
            exp.values[rows, :width],
            exp.returns[rows, :width],
            mask,
            self.hyper.value_clip,
        )
        self._optimizer_step(value_loss, self.value_net, self.value_opt, "value")
        return value_loss, value_clipfrac

    def update(self, exp: Experience, ptx_blocks: Tensor | None) -> dict[str, float]:
        """`ppo_epochs` passes of clipped policy and value updates over shuffled minibatches."""
        hyper = self.hyper
        if hyper.ptx_gamma > 0 and ptx_blocks is None:
            raise ValueError("ptx_gamma > 0 needs pretraining blocks")
        sums: dict[str, float] = {}
        steps = 0
        batch = exp.response_ids.shape[0]
        for _ in range(hyper.ppo_epochs):
            for rows in torch.randperm(batch, generator=self.generator).split(hyper.minibatch_size):
                mask = exp.mask[rows]
                qr, am, prompt_len, width = _trim(
                    exp.query_response[rows], exp.attention_mask[rows], exp.prompt_len, mask
                )
                mask, response_ids = mask[:, :width], exp.response_ids[rows, :width]

                # Independent networks and optimizers: with 2+ threads, side by side.
                batch_args = (exp, rows, qr, am, prompt_len, mask)
                policy_out, (value_loss, value_clipfrac) = self.side.both(
                    partial(self._policy_step, *batch_args, response_ids, ptx_blocks),
                    partial(self._value_step, *batch_args),
                )
                policy_loss, clipfrac, approx_kl, ptx_loss, entropy = policy_out
                stats = {
                    "ppo/policy_loss": policy_loss,
                    "ppo/value_loss": value_loss,
                    "ppo/clipfrac": clipfrac,
                    "ppo/approx_kl": approx_kl,
                    "ppo/entropy": entropy,
                    "ppo/value_clipfrac": value_clipfrac,
                    "ppo/ptx_loss": ptx_loss
                    if ptx_loss is not None
                    else torch.tensor(float("nan")),
                }
                for key, value in stats.items():
                    sums[key] = sums.get(key, 0.0) + float(value.detach())
                steps += 1
        return {key: total / steps for key, total in sums.items()}

    def step(
        self, prompts: Sequence[str], ptx_blocks: Tensor | None
    ) -> tuple[dict[str, float], Experience]:
        """One PPO iteration on `prompts`: rollout, update, KL-controller update."""
        start = time.perf_counter()
        exp = self.rollout(prompts)
        rollout_seconds = time.perf_counter() - start
        stats = self.update(exp, ptx_blocks)
        seq_kl = exp.kl.sum(1)
        self.kl_ctl.update(float(seq_kl.mean()), n_steps=len(prompts))
        self.iteration += 1
        metrics = {
            "ppo/reward_rm": float(exp.rm_score.mean()),
            "ppo/score": float(exp.score.mean()),
            "ppo/kl": float(seq_kl.mean()),
            "ppo/response_len": float(exp.mask.sum(1).float().mean()),
            "ppo/beta": exp.beta,
            "ppo/no_eos_fraction": float(exp.truncated.float().mean()),
            **stats,
            "ppo/seconds_rollout": rollout_seconds,
            "ppo/seconds": time.perf_counter() - start,
        }
        return metrics, exp

    # -------------------------------------------------------------- evaluation

    @torch.no_grad()
    def evaluate(self, prompts: Sequence[str], seed: int, batch_size: int = 128) -> EvalResult:
        """Sample the current policy on `prompts` (under its own seed: training RNG untouched)."""
        texts, scores, kls, truncated = [], [], [], []
        devices = [self.accelerator.device] if self.accelerator.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for start in range(0, len(prompts), batch_size):
                batch = list(prompts[start : start + batch_size])
                ro, qr, am, prompt_len, response_ids, mask = self._sample(
                    self.unwrapped_policy, batch
                )
                (logprobs, ref_logprobs), score = self.side.both(
                    partial(self._policy_and_ref_logprobs, qr, am, prompt_len, response_ids, mask),
                    partial(self._rm_scores, batch, ro.texts, qr, am, ro.truncated),
                )
                texts += ro.texts
                scores.append(score)
                kls.append((logprobs - ref_logprobs).sum(1))
                truncated.append(ro.truncated)
        return EvalResult(texts, torch.cat(scores), torch.cat(kls), torch.cat(truncated))

    # -------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict:
        """Everything needed to continue exactly where this run is: weights, optimizers, beta, RNGs.

        Weight and optimizer tensors are shared with the live trainer (as
        `nn.Module.state_dict` does): save or copy them before training on.
        """
        rng = {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "generator": self.generator.get_state(),
        }
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "iteration": self.iteration,
            "stopped": self.stopped,
            "policy": self.unwrapped_policy.state_dict(),
            "value_model": self.unwrapped_value_model.state_dict(),
            "policy_optimizer": self.policy_opt.state_dict(),
            "value_optimizer": self.value_opt.state_dict(),
            "kl_beta": self.kl_ctl.beta,
            "normalizer": {
                "mean": self.normalizer.mean,
                "var": self.normalizer.var,
                "count": self.normalizer.count,
            },
            "value_affine": [self.value_shift, self.value_scale],
            "rng": rng,
        }

    def load_state_dict(self, state: dict) -> None:
        self.iteration, self.stopped = int(state["iteration"]), bool(state["stopped"])
        self.unwrapped_policy.load_state_dict(state["policy"])
        self.unwrapped_value_model.load_state_dict(state["value_model"])
        self.policy_opt.load_state_dict(state["policy_optimizer"])
        self.value_opt.load_state_dict(state["value_optimizer"])
        self.kl_ctl.beta = float(state["kl_beta"])
        self.normalizer.mean = float(state["normalizer"]["mean"])
        self.normalizer.var = float(state["normalizer"]["var"])
        self.normalizer.count = int(state["normalizer"]["count"])
        self.value_shift, self.value_scale = (float(x) for x in state["value_affine"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        self.generator.set_state(rng["generator"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])


# ------------------------------------------------------------------ the loop

IterationFn = Callable[[int, dict[str, float]], bool | None]
MonitorFn = Callable[[list[int], list[str]], float]


def draw_prompts(trainer: PPOTrainer, n_prompts: int) -> list[int]:
    """Indices of this iteration's prompts: without replacement when there are enough."""
    size = trainer.hyper.rollout_batch
    if size <= n_prompts:
        return torch.randperm(n_prompts, generator=trainer.generator)[:size].tolist()
    return torch.randint(0, n_prompts, (size,), generator=trainer.generator).tolist()


def ppo_train(
    trainer: PPOTrainer,
    prompts: Sequence[str],
    ptx_blocks: Tensor | None,
    on_iteration: IterationFn,
    monitor: MonitorFn | None = None,
    checkpoint: Callable[[PPOTrainer], None] | None = None,
    checkpoint_every: int = 10,
) -> PPOTrainer:
    """Run iterations `trainer.iteration .. hyper.iterations - 1` (a resumed trainer continues).

    Per iteration `i`: `trainer.step`, then `monitor(prompt_indices, responses)`
    (the gold score: logged as ppo/reward_gold, never used for training), then
    `on_iteration(i, metrics)`; if it returns True the run stops after this
    iteration. `checkpoint(trainer)` is called after every `checkpoint_every`
    iterations and after the last one, with `trainer.iteration = i + 1`.
    `ptx_blocks` ([N, block] packed pretraining ids) is read only when
    `ptx_gamma > 0`.
    """
    if not trainer.stopped and trainer.iteration == 0 and trainer.normalizer.count == 0:
        trainer.fit_reward_normalizer(prompts)
    while trainer.iteration < trainer.hyper.iterations and not trainer.stopped:
        index = trainer.iteration
        chosen = draw_prompts(trainer, len(prompts))
        metrics, exp = trainer.step([prompts[i] for i in chosen], ptx_blocks)
        metrics["ppo/reward_gold"] = (
            monitor(chosen, exp.texts) if monitor is not None else float("nan")
        )
        trainer.stopped = bool(on_iteration(index, metrics))
        last = trainer.stopped or trainer.iteration == trainer.hyper.iterations
        interrupted = stop_requested()
        if checkpoint is not None and (
            trainer.iteration % checkpoint_every == 0 or last or interrupted
        ):
            checkpoint(trainer)
        if interrupted:
            raise interrupt(f"stopped after iteration {index}; checkpoint kept")
    return trainer
