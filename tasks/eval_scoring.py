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


@torch.no_grad()
def public_suite_accuracy(model, tokenizer, items: list[dict]) -> float:
    """Multiple choice by likelihood: the choice whose tokens the model finds most probable."""
    correct = 0
    for item in items:
        context = encode_prompt(tokenizer, " " + item["context"])
        seqs = [
            context + tokenizer(c, add_special_tokens=False)["input_ids"] for c in item["choices"]
        ]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), tokenizer.pad_token_id)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
        logits = model(input_ids=ids, **no_cache(model)).logits[:, :-1]
        logp = torch.log_softmax(logits.float(), -1)
        target = ids[:, 1:]
        token_logp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        scores = [
            token_logp[i, len(context) - 1 : len(s) - 1].sum().item() for i, s in enumerate(seqs)
        ]
        correct += int(max(range(len(scores)), key=scores.__getitem__) == item["answer"])
    return correct / len(items)


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
