"""Turn (prompt, response) text into padded training batches.

The text format comes from `instructflow.models.formatting`, the one place that defines it,
so SFT sees exactly what sampling, the reward model and PPO see.
"""

import random
from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from instructflow.models.formatting import format_prompt, format_response

IGNORE_INDEX = -100
"""Label value that `torch.nn.functional.cross_entropy` (and HF models) skip."""


def encode_prompt(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Ids of an already formatted prompt.

    The tokenizer's own special tokens are kept (a Llama tokenizer prepends
    BOS, which its model expects; ours adds nothing). Every stage encodes
    prompts through here, so they all agree.
    """
    return tokenizer.encode(text, add_special_tokens=True)


def encode_response(
    tokenizer: PreTrainedTokenizerBase, response: str, prompt: str = ""
) -> list[int]:
    """Ids of `format_response(response)` followed by EOS, as the policy should emit them
    after `prompt` (behind a chat template's opening of the assistant turn: no space)."""
    ids = tokenizer.encode(format_response(response, prompt, tokenizer), add_special_tokens=False)
    return [*ids, tokenizer.eos_token_id]


def encode_pair(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    response: str,
    max_len: int,
    cut: bool = False,
) -> tuple[list[int], list[int]]:
    """Token ids of prompt + response + EOS, and labels that train on the response only.

    Prompt and response are encoded separately and concatenated, so the
    boundary is exact and matches generation (which encodes the prompt alone
    and continues from there). The EOS is labelled: the policy must learn when
    to stop. Longer than `max_len` raises, unless `cut`: then the response's end
    is cut to fit, its EOS kept (it still raises when the prompt leaves no room).
    """
    prompt_ids = encode_prompt(tokenizer, format_prompt(prompt, tokenizer))
    response_ids = encode_response(tokenizer, response, prompt)  # ends on the EOS
    room = max_len - len(prompt_ids)
    if cut and len(response_ids) > room:
        if room < 1:  # the prompt alone fills the context: nothing of the response can be read
            raise ValueError(f"prompt is {len(prompt_ids)} tokens, no room in max_len={max_len}")
        response_ids = [*response_ids[: room - 1], response_ids[-1]]
    input_ids = prompt_ids + response_ids
    if len(input_ids) > max_len:
        raise ValueError(f"example is {len(input_ids)} tokens, longer than max_len={max_len}")
    labels = [IGNORE_INDEX] * len(prompt_ids) + response_ids
    return input_ids, labels


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_value: int, side: str = "right"
) -> torch.Tensor:
    """Stack variable-length sequences into one [B, T] long tensor, padding on `side`."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    width = max((len(s) for s in sequences), default=0)
    out = torch.full((len(sequences), width), pad_value, dtype=torch.long)
    for row, seq in enumerate(sequences):
        if not seq:
            continue
        values = torch.as_tensor(list(seq), dtype=torch.long)
        if side == "right":
            out[row, : len(seq)] = values
        else:
            out[row, width - len(seq) :] = values
    return out


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counting real tokens only (0 on left padding), as transformers' `generate` counts them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def collate_sft(
    examples: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int
) -> dict[str, torch.Tensor]:
    """Right-pad `encode_pair` outputs into input_ids, attention_mask and labels."""
    input_ids = pad_batch([ids for ids, _ in examples], pad_id)
    attention_mask = pad_batch([[1] * len(ids) for ids, _ in examples], 0)
    labels = pad_batch([lab for _, lab in examples], IGNORE_INDEX)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def length_bucketed_batches(
    lengths: Sequence[int], batch_size: int, seed: int, chunk_batches: int = 50
) -> list[list[int]]:
    """Index batches in which sequences of similar length travel together.

    Sorting the whole data set by length would give every epoch the same
    batches in the same short-to-long order; instead the indices are shuffled,
    cut into chunks of `chunk_batches * batch_size`, sorted by length within
    each chunk, batched, and the batch order shuffled. Batches stay random
    from epoch to epoch (vary `seed`) yet waste little padding.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = chunk_batches * batch_size
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        # Stable sort on a shuffled list: ties keep a random order.
        block = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches.extend(block[b : b + batch_size] for b in range(0, len(block), batch_size))
    rng.shuffle(batches)
    return batches


def padding_waste(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> float:
    """Fraction of positions in the padded batches that are padding."""
    total = sum(len(b) * max(lengths[i] for i in b) for b in batches if b)
    real = sum(lengths[i] for b in batches for i in b)
    return 0.0 if total == 0 else 1.0 - real / total
