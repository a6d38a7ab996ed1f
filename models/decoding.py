"""Decoding a batch token by token with a KV cache, each row leaving the batch as it ends.

transformers' `generate` keeps every row of a batch in each forward pass
until the last row has ended. A PPO rollout's responses are short (about 6
tokens) while the longest of 64 runs to about 20, so most of that work was
on rows that had already ended; and a step's cost grows with its rows
(GPT-2 4 x 128 at one thread: 11.2 ms a step at 64 rows, 4.3 ms at 16).
Here a row is dropped from the batch and from the cache
(`Cache.batch_select_indices`) at the step it ends.

What each step feeds the model is what `generate` feeds it (positions counted
over real tokens, the 2-D attention mask, the output layer on the last
position only), and `multinomial_sampler` draws its noise as
`torch.multinomial` does on the whole batch: the tokens are `generate`'s
(tests/models/test_decoding.py compares the two).
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from instructflow.models.batching import position_ids_from_mask
from instructflow.models.lm import takes_logits_to_keep

Pick = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""pick(logits, rows) -> next tokens: `logits` [A, V] (float32, as the model gave them) of the
A rows still running, `rows` [A] their indices in the batch."""


@dataclass
class Decoded:
    tokens: torch.Tensor
    """[B, max_new_tokens] the tokens picked, up to and including each row's EOS; pad after."""
    logits: list[torch.Tensor] | None
    """Per step, [B, V] the model's logits for every row (0 for rows that had ended);
    only when asked (`keep_logits`)."""


def greedy(logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return logits.argmax(-1)


def multinomial_sampler(temperature: float, top_k: int | None, batch_size: int) -> Pick:
    """Sampling at `temperature`, from the `top_k` most likely tokens when set, as `generate` samples.

    torch.multinomial (one sample a row) draws an exponential for every row and
    token of its input and takes argmax(p / noise). `generate` passes it the
    whole batch, ended rows included; so the noise is drawn for `batch_size` rows
    at every step and each running row takes its own.
    """

    def pick(logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        scores = logits / temperature
        if top_k:
            kth = torch.topk(scores, min(top_k, scores.shape[-1])).values[..., -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        noise = torch.empty(batch_size, probs.shape[-1], device=probs.device).exponential_(1)
        return probs.div(noise[rows]).argmax(-1)

    return pick


@torch.no_grad()
def decode(
    model: PreTrainedModel,
    query: torch.Tensor,
    query_mask: torch.Tensor,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    pick: Pick,
    keep_logits: bool = False,
) -> Decoded:
    """Up to `max_new_tokens` tokens after each left-padded prompt of `query`, stopping a row at EOS."""
    batch = query.shape[0]
    tokens = torch.full((batch, max_new_tokens), pad_id, dtype=torch.long, device=query.device)
    kept: list[torch.Tensor] | None = [] if keep_logits else None
    rows = torch.arange(batch, device=query.device)
    mask = query_mask
    positions = position_ids_from_mask(query_mask)
    last_only = {"logits_to_keep": 1} if takes_logits_to_keep(model) else {}
    inputs, cache = query, None
    for step in range(max_new_tokens):
        out = model(
            input_ids=inputs,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            **last_only,
        )
        cache = out.past_key_values
        logits = out.logits[:, -1].float()
        if kept is not None:
            kept.append(logits.new_zeros(batch, logits.shape[-1]).index_copy_(0, rows, logits))
        chosen = pick(logits, rows)
        tokens[rows, step] = chosen
        running = chosen != eos_id
        if not bool(running.all()):
            if not bool(running.any()):
                break
            keep = running.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            rows, chosen, mask, positions = rows[keep], chosen[keep], mask[keep], positions[keep]
        mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
        positions = positions[:, -1:] + 1
        inputs = chosen[:, None]
    return Decoded(tokens=tokens, logits=kept)
