"""Scores evaluation reads off a model: SFT log-probs of responses, public-suite accuracy, RM scores."""

import torch

from instructflow.models.batching import encode_prompt, pad_batch
from instructflow.models.lm import context_length, no_cache
from instructflow.models.reward_model import encode_for_reward, rewards
from instructflow.models.sampling import encode_prompts, sequence_logprobs


@torch.no_grad()
def sft_logprobs_of(sft, tokenizer, prompts: list[str], ro) -> torch.Tensor:
    """log pi_SFT of the policy's response tokens, conditioned on the bare prompt (no prefix).

    Only for a policy that shares SFT's tokenizer: the sampled ids are SFT's ids too.
    """
    ids = encode_prompts(tokenizer, prompts)
    width = max(len(x) for x in ids)
    prompt_ids = pad_batch(ids, tokenizer.pad_token_id, side="left")
    prompt_mask = pad_batch([[1] * len(x) for x in ids], 0, side="left")
    query = torch.cat([prompt_ids, ro.response_ids], dim=1)
    mask = torch.cat([prompt_mask, ro.response_mask], dim=1)
    return sequence_logprobs(sft, query, mask, width, ro.response_ids, ro.response_mask).sum(-1)


def public_suite_accuracy(model, tokenizer, items: list[dict]) -> float:
    """Multiple choice by likelihood: the choice whose tokens the model finds most probable."""
    scores = choice_logprobs(model, tokenizer, items)
    correct, at = 0, 0
    for item in items:
        mine = scores[at : at + len(item["choices"])]
        correct += int(max(range(len(mine)), key=mine.__getitem__) == item["answer"])
        at += len(mine)
    return correct / len(items)


LOGIT_BUDGET = 2**24  # values of one batch's log-probs (64 MiB in float32)


@torch.no_grad()
def choice_logprobs(model, tokenizer, items: list[dict], batch_rows: int = 64) -> list[float]:
    """log p(choice | " " + context) of every choice of every item, in that order.

    All (item, choice) sequences are scored in batches of up to `batch_rows`, shortest
    first, not one forward per item: the suite has hundreds of items, and on a small model
    a forward's fixed cost was most of the evaluation stage. A batch holds fewer rows where
    its log-probs over the vocabulary would pass LOGIT_BUDGET values (a large vocabulary).
    Right padding leaves a causal model's log-probs of the tokens before it as they were.
    """
    rows = []  # (token ids, context length)
    for item in items:
        context = encode_prompt(tokenizer, " " + item["context"])
        for choice in item["choices"]:
            rows.append(
                (context + tokenizer(choice, add_special_tokens=False)["input_ids"], len(context))
            )
    scores = [0.0] * len(rows)
    order = sorted(range(len(rows)), key=lambda r: len(rows[r][0]))
    vocab = model.get_output_embeddings().weight.shape[0]
    start = 0
    while start < len(order):
        longest = len(rows[order[min(start + batch_rows, len(order)) - 1]][0])
        fit = max(1, min(batch_rows, LOGIT_BUDGET // (longest * vocab)))
        batch, start = order[start : start + fit], start + fit
        ids = pad_batch([rows[r][0] for r in batch], tokenizer.pad_token_id, side="right")
        logits = model(input_ids=ids, **no_cache(model)).logits[:, :-1]
        token_logp = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
        for j, r in enumerate(batch):
            seq, context = rows[r]
            scores[r] = token_logp[j, context - 1 : len(seq) - 1].sum().item()
    return scores


@torch.no_grad()
def rm_scores(
    rm, rm_tokenizer, prompts: list[str], texts: list[str], batch_size: int = 128
) -> list[float]:
    """The RM's score of each (prompt, response text), re-encoded with the RM's own tokenizer."""
    out = []
    max_len = context_length(rm)
    for start in range(0, len(prompts), batch_size):
        ids, mask = encode_for_reward(
            rm_tokenizer,
            prompts[start : start + batch_size],
            texts[start : start + batch_size],
            max_len,
            cut_responses=True,  # samples: re-encoded, they may outgrow the context
        )
        out += rewards(rm, ids, mask).tolist()
    return out
