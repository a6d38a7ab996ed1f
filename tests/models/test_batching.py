"""Tests for SFT encoding, padding and length-bucketed batching."""

import random

import pytest
import torch

from instructflow.models.batching import (
    IGNORE_INDEX,
    collate_sft,
    encode_pair,
    length_bucketed_batches,
    pad_batch,
    padding_waste,
)
from instructflow.models.formatting import format_prompt, format_response
from tests.models.test_lm import tiny_tokenizer


def test_encode_pair_labels_only_the_response_and_eos() -> None:
    tokenizer = tiny_tokenizer()
    # when: a pair is encoded
    input_ids, labels = encode_pair(tokenizer, "reverse the word stone", "enots", max_len=64)
    # then: the text is exactly the shared format plus EOS
    assert input_ids[-1] == tokenizer.eos_token_id
    expected = format_prompt("reverse the word stone") + format_response("enots")
    assert tokenizer.decode(input_ids[:-1]) == expected
    # and: prompt tokens are ignored, response tokens (EOS included) are targets
    n_prompt = len(tokenizer.encode(format_prompt("reverse the word stone")))
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert labels[n_prompt:] == input_ids[n_prompt:]
    assert tokenizer.decode(labels[n_prompt:-1]) == " enots"


def test_encode_pair_rejects_too_long() -> None:
    tokenizer = tiny_tokenizer()
    ids, _ = encode_pair(tokenizer, "count the letters in apple", "5", max_len=64)
    encode_pair(tokenizer, "count the letters in apple", "5", max_len=len(ids))
    with pytest.raises(ValueError, match="max_len"):
        encode_pair(tokenizer, "count the letters in apple", "5", max_len=len(ids) - 1)


def test_pad_batch_both_sides() -> None:
    seqs = [[1, 2, 3], [4], []]
    assert pad_batch(seqs, 0).tolist() == [[1, 2, 3], [4, 0, 0], [0, 0, 0]]
    assert pad_batch(seqs, 9, side="left").tolist() == [[1, 2, 3], [9, 9, 4], [9, 9, 9]]
    with pytest.raises(ValueError):
        pad_batch(seqs, 0, side="middle")


def test_collate_sft() -> None:
    tokenizer = tiny_tokenizer()
    examples = [
        encode_pair(tokenizer, "what is 12 + 30?", "42", 64),
        encode_pair(tokenizer, "reverse the word stone", "enots", 64),
    ]
    batch = collate_sft(examples, pad_id=tokenizer.pad_token_id)
    lengths = [len(ids) for ids, _ in examples]
    assert batch["input_ids"].shape == (2, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    # padding never counts in the loss and is filled with the pad id
    pad = batch["attention_mask"] == 0
    assert (batch["labels"][pad] == IGNORE_INDEX).all()
    assert (batch["input_ids"][pad] == tokenizer.pad_token_id).all()
    assert batch["labels"].dtype == torch.long


def test_bucketed_batches_cover_every_index_once_and_are_seeded() -> None:
    lengths = [random.Random(0).randint(5, 100) for _ in range(1000)]
    batches = length_bucketed_batches(lengths, batch_size=16, seed=1)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    assert all(1 <= len(b) <= 16 for b in batches)
    assert batches == length_bucketed_batches(lengths, batch_size=16, seed=1)
    assert batches != length_bucketed_batches(lengths, batch_size=16, seed=2)


def test_bucketing_wastes_far_less_padding_than_random_batches() -> None:
    # given: lengths from a wide, skewed distribution (short prompts, some long ones)
    rng = random.Random(0)
    lengths = [int(8 + rng.expovariate(1 / 30)) for _ in range(2000)]
    order = list(range(len(lengths)))
    rng.shuffle(order)
    random_batches = [order[i : i + 16] for i in range(0, len(order), 16)]
    # when: the same data is bucketed
    bucketed = length_bucketed_batches(lengths, batch_size=16, seed=0)
    # then: less than half the padding
    naive, smart = padding_waste(random_batches, lengths), padding_waste(bucketed, lengths)
    assert naive > 0.3
    assert smart < naive / 2, (naive, smart)


def test_padding_waste_by_hand() -> None:
    # batch [0, 1] pads to 4: 2 of 8 slots wasted; batch [2] wastes nothing
    assert padding_waste([[0, 1], [2]], [4, 2, 3]) == pytest.approx(2 / 11)
    assert padding_waste([], []) == 0.0
