"""Public-suite accuracy: multiple choice by the likelihood of each choice's tokens."""

import pytest
import torch

from instructflow.models.lm import build_gpt2
from instructflow.tasks.eval_scoring import choice_logprobs, public_suite_accuracy
from tests.models.test_lm import TINY_GPT2, tiny_tokenizer

ITEMS = [
    {"context": "what is 12 + 30?", "choices": [" 42", " 5", " forty two"], "answer": 0},
    {"context": "count the letters in apple", "choices": [" 5", " 50"], "answer": 1},
    {"context": "reverse the word stone", "choices": [" enots", " stone", " s"], "answer": 2},
    {"context": "Q", "choices": [" a", " a b c d e f"], "answer": 0},
]


def _alone(model, tokenizer, context: str, choice: str) -> float:
    """log p(choice | " " + context) from one forward of that sequence alone, no padding."""
    context_ids = tokenizer.encode(" " + context)
    ids = context_ids + tokenizer.encode(choice, add_special_tokens=False)
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, :-1].float(), -1)
    return sum(logp[t - 1, ids[t]].item() for t in range(len(context_ids), len(ids)))


@pytest.fixture(scope="module")
def model_and_tokenizer():
    tokenizer = tiny_tokenizer()
    return build_gpt2(tokenizer, TINY_GPT2, seed=3).eval(), tokenizer


def test_each_choice_scores_as_it_does_alone_in_batches_of_any_size(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    # given choices of different lengths (so a batch is padded), each scored alone
    alone = [_alone(model, tokenizer, it["context"], c) for it in ITEMS for c in it["choices"]]
    # then batches across items, shortest first, give each the same log-prob, in item order
    for rows in (1, 3, 64):
        batched = choice_logprobs(model, tokenizer, ITEMS, batch_rows=rows)
        assert batched == pytest.approx(alone, abs=1e-4)


def test_accuracy_counts_the_items_whose_likeliest_choice_is_the_answer(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    scores = choice_logprobs(model, tokenizer, ITEMS)
    # the likeliest choice of each item, worked out from the scores
    firsts = [0, 3, 5, 8]  # where each item's choices start (3, 2, 3, 2 of them)
    picks = [
        max(range(len(it["choices"])), key=lambda c, f=f: scores[f + c])
        for it, f in zip(ITEMS, firsts, strict=True)
    ]
    expected = sum(p == it["answer"] for p, it in zip(picks, ITEMS, strict=True)) / len(ITEMS)
    assert public_suite_accuracy(model, tokenizer, ITEMS) == expected
    # and an item answered by its likeliest choice counts, by any other does not
    rigged = [dict(it, answer=p) for it, p in zip(ITEMS, picks, strict=True)]
    assert public_suite_accuracy(model, tokenizer, rigged) == 1.0
    wrong = [
        dict(it, answer=(p + 1) % len(it["choices"])) for it, p in zip(ITEMS, picks, strict=True)
    ]
    assert public_suite_accuracy(model, tokenizer, wrong) == 0.0


def test_a_large_vocabulary_scores_in_smaller_batches_to_the_same_log_probs(
    model_and_tokenizer, monkeypatch
):
    from instructflow.tasks import eval_scoring

    model, tokenizer = model_and_tokenizer
    whole = choice_logprobs(model, tokenizer, ITEMS)
    # given a budget that holds one row of these lengths at a time
    vocab = model.get_output_embeddings().weight.shape[0]
    monkeypatch.setattr(eval_scoring, "LOGIT_BUDGET", 20 * vocab)
    forwards = []
    real_forward = model.forward
    monkeypatch.setattr(
        model, "forward", lambda **kw: forwards.append(kw["input_ids"].shape) or real_forward(**kw)
    )
    # then each forward stays within it, and every choice scores as before
    assert choice_logprobs(model, tokenizer, ITEMS) == pytest.approx(whole, abs=1e-4)
    assert all(rows * width * vocab <= 20 * vocab or rows == 1 for rows, width in forwards)
    assert len(forwards) > 1
