"""Batched, KV-cached sampling from a policy, and the log-probs of what it said.

Layout of a rollout (B sequences, prompts LEFT padded to P, responses RIGHT
padded to R = max_new_tokens):

    query_response = [pad pad Q Q Q | r r r EOS pad pad]
                      <---- P ----> <------- R ------->

Left padding puts every prompt's last token at column P-1, so all responses
start in the same column and one forward pass scores the whole batch.
Position ids come from the attention mask, so a padded prompt is read at the
same positions as the unpadded one.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from instructflow.models import decoding
from instructflow.models.batching import (
    IGNORE_INDEX,
    encode_prompt,
    encode_response,
    pad_batch,
    position_ids_from_mask,
)
from instructflow.models.formatting import format_prompt, parse_response
from instructflow.models.length_groups import over_responses
from instructflow.models.lm import context_length, no_cache, takes_logits_to_keep
from instructflow.models.ppo_math import logprobs_of


@dataclass
class Sampled:
    """A batch of prompts and the responses sampled for them."""

    query_response: torch.Tensor
    """[B, P+R] token ids: left-padded prompt, then the response (pad after it)."""
    attention_mask: torch.Tensor
    """[B, P+R] 1 on real prompt tokens and on `response_mask` positions."""
    prompt_len: int
    """P: width of the left-padded prompt block; responses start at this column."""
    response_ids: torch.Tensor
    """[B, R] generated ids, padded to R = max_new_tokens."""
    response_mask: torch.Tensor
    """[B, R] 1 on response tokens up to and including the first EOS, 0 after."""
    texts: list[str]
    """Decoded responses (special tokens dropped, `parse_response` applied)."""
    truncated: torch.Tensor
    """[B] bool: no EOS within max_new_tokens."""
    logprobs: torch.Tensor | None = None
    """[B, R] log-prob at the sampling temperature of each response token under the model
    that sampled it, 0 after the response; only when asked (`generate(with_logprobs=True)`)."""


def response_mask_from_ids(response_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """1 up to and including the first EOS of each row, 0 after it."""
    is_eos = (response_ids == eos_token_id).long()
    eos_before = is_eos.cumsum(-1) - is_eos  # EOS tokens strictly before each position
    return (eos_before == 0).long()


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: list[str], prefix: str = ""
) -> list[list[int]]:
    """Token ids of `prefix + format_prompt(p)`, with the tokenizer's usual BOS if it adds one."""
    return [encode_prompt(tokenizer, prefix + format_prompt(p, tokenizer)) for p in prompts]


class RowSeededSampling:
    """Sampling in which each row draws its noise from its own seeded generator (the Gumbel-max trick).

    argmax(logits / T + Gumbel noise) is a sample of softmax(logits / T); the
    noise of row r at step t is the t-th draw of generator r. A row's
    response then depends on its seed alone, not on which other rows share
    its batch: split a batch across processes and each row says the same.
    A `decoding.Pick`: called with the running rows' logits and their rows.
    """

    def __init__(self, seeds: list[int], temperature: float) -> None:
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        self.temperature = temperature

    def __call__(self, logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        uniform = torch.stack(
            [
                torch.rand(logits.shape[-1], generator=self.generators[row], dtype=torch.float64)
                for row in rows.tolist()
            ]
        )
        gumbel = -torch.log(-torch.log(uniform.clamp(min=1e-300)))
        noisy = logits.float() / self.temperature + gumbel.to(logits.device, torch.float32)
        return noisy.argmax(-1)


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
    temperature: float = 1.0,
    greedy: bool = False,
    top_k: int | None = None,
    prefix: str = "",
    row_seeds: list[int] | None = None,
    with_logprobs: bool = False,
) -> Sampled:
    """Sample (or greedily decode) one response per prompt, in one batch.

    `prefix` is text put before the formatted prompt (few-shot examples for
    the prompted-baseline policy); it is part of the query in the result.
    The tokenizer is not modified: padding is done here, not by the tokenizer.
    With `row_seeds` (one per prompt) each row samples from its own generator
    (`RowSeededSampling`) instead of the global one. `with_logprobs` also
    returns the sampled tokens' log-probs, from the logits generation computed
    anyway (a PPO rollout needs them: no second forward pass of the policy).
    """
    device = model.device
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    if pad_id is None or eos_id is None:
        raise ValueError(
            "tokenizer needs a pad and an eos token (see instructflow.models.lm.ensure_pad_token)"
        )
    prompt_ids = encode_prompts(tokenizer, prompts, prefix)
    query = pad_batch(prompt_ids, pad_id, side="left").to(device)
    query_mask = pad_batch([[1] * len(ids) for ids in prompt_ids], 0, side="left").to(device)
    prompt_len = query.shape[1]
    if prompt_len + max_new_tokens > context_length(model):
        # Past the context, GPT-2's position table would fail with an index error.
        raise ValueError(
            f"prompt ({prompt_len} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
            f"model's context length ({context_length(model)})"
        )

    pick: decoding.Pick
    if row_seeds is not None:
        if len(row_seeds) != len(prompts) or greedy or top_k:
            raise ValueError("row_seeds: one seed per prompt, for plain sampling only")
        pick = RowSeededSampling(row_seeds, temperature)
    elif greedy:
        pick = decoding.greedy
    elif temperature <= 0:
        raise ValueError("temperature must be > 0 when sampling (use greedy=True instead)")
    else:
        pick = decoding.multinomial_sampler(temperature, top_k, len(prompts))
    # Only what is passed here decides how we decode: a checkpoint's own
    # generation_config.json (top_p, repetition_penalty...) is never read.
    was_training = model.training
    model.eval()
    try:
        decoded = decoding.decode(
            model, query, query_mask, max_new_tokens, eos_id, pad_id, pick, with_logprobs
        )
    finally:
        model.train(was_training)

    response_ids = decoded.tokens
    response_mask = response_mask_from_ids(response_ids, eos_id)
    truncated = ~(response_ids == eos_id).any(-1)

    texts = [
        parse_response(tokenizer.decode(ids[mask.bool()].tolist(), skip_special_tokens=True))
        for ids, mask in zip(response_ids, response_mask, strict=True)
    ]
    logprobs = None
    if with_logprobs:
        logits = torch.stack(decoded.logits, dim=1) / temperature  # [B, steps, V]
        steps = logits.shape[1]
        chosen = torch.log_softmax(logits, -1).gather(-1, response_ids[:, :steps, None])
        logprobs = F.pad(chosen.squeeze(-1), (0, max_new_tokens - steps)) * response_mask
    return Sampled(
        query_response=torch.cat([query, response_ids], dim=1),
        attention_mask=torch.cat([query_mask, response_mask], dim=1),
        prompt_len=prompt_len,
        response_ids=response_ids,
        response_mask=response_mask,
        texts=texts,
        truncated=truncated,
        logprobs=logprobs,
    )


def sample_responses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    num_samples: int,
    max_new_tokens: int,
    temperature: float,
    batch_size: int,
    seed: int,
) -> list[list[str]]:
    """`num_samples` sampled responses for each prompt, deterministic for `seed`.

    Each prompt is repeated `num_samples` times and the flat list is cut into
    batches of `batch_size` sequences, so a batch mixes prompts of different
    lengths but the work is spread evenly. The global RNG state is restored
    afterwards, so sampling does not disturb a surrounding training loop.
    """
    flat = [p for p in prompts for _ in range(num_samples)]
    texts: list[str] = []
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for start in range(0, len(flat), batch_size):
            rollout = generate(
                model, tokenizer, flat[start : start + batch_size], max_new_tokens, temperature
            )
            texts.extend(rollout.texts)
    return [texts[i * num_samples : (i + 1) * num_samples] for i in range(len(prompts))]


def response_logits(
    model,
    query_response: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_len: int,
    width: int,
    temperature: float,
) -> torch.Tensor:
    """[B, width, V] logits (at the sampling temperature) that predict the response tokens.

    Run over rows of similar length (models/length_groups.py); the output layer only
    at the positions that predict response tokens (`logits_to_keep`), where the model
    takes it.
    """
    keeps = takes_logits_to_keep(model)

    def run(ids: torch.Tensor, mask: torch.Tensor, n: int) -> torch.Tensor:
        logits = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids_from_mask(mask),
            use_cache=False,
            **({"logits_to_keep": n} if keeps else {}),
        ).logits
        return logits[:, -n:].float()

    return over_responses(run, query_response, attention_mask, prompt_len, width) / temperature


def sequence_logprobs(
    model: PreTrainedModel,
    query_response: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_len: int,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """[B, R] log-prob of each response token under `model`, 0 where `response_mask` is 0.

    Batched forward passes (with gradients if the caller has them on).
    `temperature` divides the logits, to score responses under the same
    distribution they were sampled from.
    """
    width = response_ids.shape[1]
    logits = response_logits(model, query_response, attention_mask, prompt_len, width, temperature)
    # The PPO update's own formula, so a rollout's reference log-probs and the policy's
    # in the update round alike (an unchanged policy has a ratio of exactly 1).
    logprobs = logprobs_of(logits, response_ids)
    return torch.where(response_mask.bool(), logprobs, torch.zeros_like(logprobs))


@torch.no_grad()
def text_response_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    responses: list[str],
    batch_size: int = 64,
) -> torch.Tensor:
    """[N] log p(response + EOS | prompt) under `model`, from text.

    For responses that another model wrote with another tokenizer: each text
    is encoded with `model`'s own tokenizer (prompt and response separately, as
    in training), so any two policies can be scored by the same model. A pair
    longer than the context keeps its first tokens: the score then covers the
    part of the response that fits.
    """
    max_len = context_length(model)
    out = []
    for start in range(0, len(prompts), batch_size):
        rows = []
        for prompt, response in zip(
            prompts[start : start + batch_size], responses[start : start + batch_size], strict=True
        ):
            prompt_ids = encode_prompt(tokenizer, format_prompt(prompt, tokenizer))
            response_ids = encode_response(tokenizer, response, prompt)
            ids = (prompt_ids + response_ids)[:max_len]
            labels = ([IGNORE_INDEX] * len(prompt_ids) + response_ids)[:max_len]
            rows.append((ids, labels))
        input_ids = pad_batch([ids for ids, _ in rows], tokenizer.pad_token_id).to(model.device)
        labels = pad_batch([labels for _, labels in rows], IGNORE_INDEX).to(model.device)
        mask = pad_batch([[1] * len(ids) for ids, _ in rows], 0).to(model.device)
        # The logit at column t predicts the token at column t + 1.
        logits = model(input_ids=input_ids, attention_mask=mask, **no_cache(model)).logits
        logits = logits[:, :-1].float()
        targets = labels[:, 1:]
        scored = targets != IGNORE_INDEX
        token_ll = logits.log_softmax(-1).gather(-1, targets.clamp(min=0).unsqueeze(-1))
        out.append((token_ll.squeeze(-1) * scored).sum(-1).cpu())
    return torch.cat(out)
