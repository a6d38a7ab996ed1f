"""PPO and PPO-ptx for a language-model policy: the InstructGPT RL stage, readable top to bottom.

The environment is a bandit: a random prompt, the policy's sampled response,
the reward model's score at the end of the episode. One iteration is

1. rollout (no gradients; models/rollout.py): sample responses for
   `rollout_batch` prompts (KV-cached, batched), the policy's log-probs of
   the sampled tokens taken from generation's own logits, then ONE batched
   forward each for the frozen SFT reference's log-probs, the value model's
   values and the reward model's score;
2. rewards: the (normalised) RM score on the last response token, minus a
   penalty if the response hit the length limit without EOS, and
   -beta * (log pi - log pi_SFT) on every token (`ppo_math.kl_penalty_rewards`);
3. GAE advantages (whitened over the batch) and returns;
4. `ppo_epochs` passes over shuffled minibatches: clipped surrogate for the
   policy (plus gamma * pretraining LM loss for PPO-ptx), clipped value loss
   for the value model, each with its own AdamW optimizer;
5. the KL controller sees the batch's KL (adaptive beta, or fixed).

Settings: `instructflow.models.ppo_config.PPOHyper`. The loop that runs iterations:
`instructflow.models.ppo_loop.ppo_train`. Resume state: `instructflow.models.ppo_state`.

Dropout: every network runs in eval mode, also while it is trained, so the
importance ratio is 1 on the first minibatch of an update up to float
rounding (KV-cached generation and a full forward pass sum in another order;
with dropout the ratio would measure dropout noise, not policy change).

No Prefect, no MLflow: progress, monitoring (gold score) and checkpoints go
to callbacks that the caller (tasks/ppo.py) supplies.
"""

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial

import torch
from peft import PeftModel
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from instructflow.models import ppo_math, ppo_shards, rollout
from instructflow.models.distributed import Group
from instructflow.models.length_groups import over_responses
from instructflow.models.lora import adapters_off, trainable_parameters
from instructflow.models.numeric import check_finite
from instructflow.models.ppo_config import PPOHyper
from instructflow.models.ppo_state import load_trainer_state, trainer_state
from instructflow.models.reward_model import TokenValues
from instructflow.models.rollout import (
    EvalResult,
    Experience,
    Minibatch,
    RewardNormalizer,
    minibatch,
)
from instructflow.models.runtime import adamw, make_accelerator
from instructflow.models.sampling import response_logits
from instructflow.models.side_thread import SideThread
from instructflow.models.tokenizer import shares_vocabulary

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


# ------------------------------------------------------------------ the trainer


class PPOTrainer:
    """Policy, value model, their optimizers and the KL controller; one `step` per iteration.

    `policy` and `value_model` are trained; `ref_policy` (the SFT model) and
    `reward_model` are frozen. The value model is a scalar-head model read
    with `instructflow.models.reward_model.token_values` (initialise it from the RM) and
    must use the policy's token ids; the reward model may use another
    tokenizer (`rm_tokenizer`), in which case responses are re-encoded as text.

    With LoRA, `policy` and `value_model` are `PeftModel`s (instructflow.models.lora) and
    `ref_policy` / `reward_model` may be None: the reference is then the
    policy with its adapters off, and the reward model the value model with
    its adapters off (the value model starts as the RM). No network is held
    twice; only adapters (and the value head) train.

    `ptx_gamma` weighs the pretraining LM loss mixed into every policy step
    (0: plain PPO); `seed` seeds sampling, prompt order, minibatch order and
    ptx blocks. Both are per run, not settings: one PPOHyper drives PPO and PPO-ptx.
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
        *,
        ptx_gamma: float = 0.0,
        seed: int = 0,
        row_seeded: bool = False,
    ) -> None:
        if ptx_gamma < 0:
            raise ValueError("ptx_gamma must be >= 0")
        self.hyper, self.ptx_gamma, self.seed = hyper, ptx_gamma, seed
        self.tokenizer = tokenizer
        self.rm_tokenizer = rm_tokenizer or tokenizer
        self.rm_reads_policy_ids = shares_vocabulary(tokenizer, self.rm_tokenizer)
        self.accelerator = make_accelerator(hyper.precision)
        device = self.accelerator.device
        self.group = Group(self.accelerator)
        # Under `accelerate launch`, or when asked: the batch split across processes,
        # each row sampled from its own seed (models/ppo_shards.py).
        self.row_seeded = row_seeded or self.group.size > 1
        if hyper.rollout_batch < self.group.size:
            raise ValueError(
                f"rollout_batch ({hyper.rollout_batch}) must be at least the number of processes ({self.group.size})"
            )
        # With 2+ CPU threads: value-model work beside policy work, one core each (not beside
        # another process's collectives: DDP's all-reduces would interleave across threads).
        self.side = SideThread(device, enabled=self.group.size == 1)
        torch.manual_seed(seed)
        self.generator = torch.Generator().manual_seed(seed)

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
        policy_opt = adamw(
            trainable_parameters(policy), lr=hyper.lr, weight_decay=hyper.weight_decay
        )
        value_opt = adamw(
            trainable_parameters(value_model), lr=hyper.value_lr, weight_decay=hyper.weight_decay
        )
        self.policy, self.value_net, self.policy_opt, self.value_opt = self.accelerator.prepare(
            policy, TokenValues(value_model), policy_opt, value_opt
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

    def values(
        self, query_response: Tensor, attention_mask: Tensor, prompt_len: int, width: int
    ) -> Tensor:
        """[B, width] value of the state in which each response token is chosen (same columns as the logits)."""
        values = over_responses(
            lambda ids, mask, n: self.value_net(ids, mask)[:, -n:].float(),
            query_response,
            attention_mask,
            prompt_len,
            width,
        )  # over rows of similar length
        return (values - self.value_shift) / self.value_scale

    # -------------------------------------------------------------- rollout (models/rollout.py)

    def fit_reward_normalizer(self, prompts: Sequence[str]) -> None:
        rollout.fit_reward_normalizer(self, prompts)

    def rollout(self, prompts: Sequence[str]) -> Experience:
        return rollout.rollout(self, prompts)

    def evaluate(self, prompts: Sequence[str], seed: int, batch_size: int = 128) -> EvalResult:
        return rollout.evaluate(self, prompts, seed, batch_size)

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
        check_finite(f"{name} loss", self.iteration, loss, "iteration")
        self.accelerator.backward(loss)
        norm = self.accelerator.clip_grad_norm_(net.parameters(), self.hyper.grad_clip)
        check_finite(f"{name} gradient norm", self.iteration, norm, "iteration")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def surrogate(self, exp: Experience, mb: Minibatch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The clipped-surrogate loss of minibatch `mb` of `exp`: the response logits, the
        loss, the clipped fraction and the approximate KL."""
        width = mb.mask.shape[1]
        logits = response_logits(
            self.policy,
            mb.query_response,
            mb.attention_mask,
            mb.prompt_len,
            width,
            self.hyper.temperature,
        )
        policy_loss, clipfrac, approx_kl = ppo_math.clipped_policy_loss(
            ppo_math.logprobs_of(logits, mb.response_ids),
            exp.logprobs[mb.rows, :width],
            exp.advantages[mb.rows, :width],
            mb.mask,
            self.hyper.clip_eps,
        )
        return logits, policy_loss, clipfrac, approx_kl

    def value_loss(self, exp: Experience, mb: Minibatch) -> tuple[Tensor, Tensor]:
        """The clipped value loss of minibatch `mb` of `exp` and its clipped fraction."""
        width = mb.mask.shape[1]
        return ppo_math.clipped_value_loss(
            self.values(mb.query_response, mb.attention_mask, mb.prompt_len, width),
            exp.values[mb.rows, :width],
            exp.returns[mb.rows, :width],
            mb.mask,
            self.hyper.value_clip,
        )

    def _policy_step(
        self, exp: Experience, mb: Minibatch, ptx_blocks: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor]:
        """One clipped-surrogate step (plus ptx) on a minibatch; its loss terms and entropy."""
        logits, policy_loss, clipfrac, approx_kl = self.surrogate(exp, mb)
        ptx_loss = self._ptx_loss(ptx_blocks) if self.ptx_gamma > 0 else None
        loss = ppo_math.ptx_mixed_loss(policy_loss, ptx_loss, self.ptx_gamma)
        self._optimizer_step(loss, self.policy, self.policy_opt, "policy")
        with torch.no_grad():
            entropy = ppo_math.masked_mean(ppo_math.entropy_from_logits(logits), mb.mask)
        return policy_loss, clipfrac, approx_kl, ptx_loss, entropy

    def _value_step(self, exp: Experience, mb: Minibatch) -> tuple[Tensor, Tensor]:
        """One clipped value-loss step on a minibatch (no random numbers: may run in a side thread)."""
        value_loss, value_clipfrac = self.value_loss(exp, mb)
        self._optimizer_step(value_loss, self.value_net, self.value_opt, "value")
        return value_loss, value_clipfrac

    def update(self, exp: Experience, ptx_blocks: Tensor | None) -> dict[str, float]:
        """`ppo_epochs` passes of clipped policy and value updates over shuffled minibatches."""
        hyper = self.hyper
        if self.row_seeded:
            return ppo_shards.update(self, exp, ptx_blocks)
        if self.ptx_gamma > 0 and ptx_blocks is None:
            raise ValueError("ptx_gamma > 0 needs pretraining blocks")
        sums: dict[str, float] = {}
        steps = 0
        batch = exp.response_ids.shape[0]
        for _ in range(hyper.ppo_epochs):
            for rows in torch.randperm(batch, generator=self.generator).split(hyper.minibatch_size):
                mb = minibatch(exp, rows)
                # Independent networks and optimizers: with 2+ threads, side by side.
                policy_out, (value_loss, value_clipfrac) = self.side.both(
                    partial(self._policy_step, exp, mb, ptx_blocks),
                    partial(self._value_step, exp, mb),
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
        batch = (
            ppo_shards.batch_metrics(self, exp)  # means over every process's rows
            if self.row_seeded
            else {
                "ppo/reward_rm": float(exp.rm_score.mean()),
                "ppo/score": float(exp.score.mean()),
                "ppo/kl": float(seq_kl.mean()),
                "ppo/response_len": float(exp.mask.sum(1).float().mean()),
                "ppo/no_eos_fraction": float(exp.truncated.float().mean()),
            }
        )
        self.kl_ctl.update(batch["ppo/kl"], n_steps=len(prompts))
        self.iteration += 1
        metrics = {
            **batch,
            "ppo/beta": exp.beta,
            **stats,
            "ppo/seconds_rollout": rollout_seconds,
            "ppo/seconds": time.perf_counter() - start,
        }
        return metrics, exp

    # -------------------------------------------------------------- resume state (models/ppo_state.py)

    def state_dict(self) -> dict:
        return trainer_state(self)

    def load_state_dict(self, state: dict) -> None:
        load_trainer_state(self, state)
