"""Pieces of data parallelism that need no second process: shards, shares of a mean, row-seeded sampling.

That N processes compute what one does end to end is tests/tasks/test_processes.py.
"""

from types import SimpleNamespace

import pytest
import torch

from instructflow.models import ppo_math
from instructflow.models.batching import collate_sft, encode_pair
from instructflow.models.distributed import (
    LAUNCHED_ENV,
    Group,
    bounds,
    labelled_tokens,
    main_process,
    shard_seeds,
    whiten,
)
from instructflow.models.lm import build_gpt2, takes_logits_to_keep
from instructflow.models.lm_training import sft_loss_sum
from instructflow.models.lora import LoraOptions, add_lora
from instructflow.models.sampling import RowSeededSampling, generate
from tests.models.test_lm import TINY_GPT2, tiny_tokenizer


def rank(index: int, size: int) -> Group:
    """A Group as process `index` of `size` sees it (shards only: nothing here communicates)."""
    return Group(SimpleNamespace(num_processes=size, process_index=index))


def test_shards_are_contiguous_and_differ_by_at_most_one():
    assert bounds(9, 2) == [0, 5, 9] and bounds(3, 4) == [0, 1, 2, 3, 3]
    assert rank(0, 2).shard(list("abcde")) == ["a", "b", "c"]
    assert rank(1, 2).shard(list("abcde")) == ["d", "e"]
    # a batch with fewer rows than processes: the last process steps on a stand-in of weight 0
    assert rank(0, 2).batch_shard([7]) == ([7], True)
    assert rank(1, 2).batch_shard([7]) == ([7], False)
    assert Group().shard([1, 2]) == [1, 2] and Group().size == 1


def test_the_same_generator_gives_every_process_its_own_rows_with_global_seeds():
    seeds = {}
    for index in (0, 1):
        rows, row_seeds = shard_seeds(torch.Generator().manual_seed(4), rank(index, 2), 5)
        seeds |= dict(zip(rows, row_seeds, strict=True))
    alone_rows, alone = shard_seeds(torch.Generator().manual_seed(4), Group(), 5)
    assert list(alone_rows) == [0, 1, 2, 3, 4] and [seeds[r] for r in range(5)] == alone
    assert len(set(alone)) == 5


class WithoutLogitsToKeep(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


@torch.no_grad()
def test_token_loss_sum_is_the_models_mean_times_its_token_count():
    tokenizer = tiny_tokenizer()
    model = build_gpt2(tokenizer, TINY_GPT2, seed=0)
    pairs = [("hi", "there you"), ("a b c d e f", "d"), ("g h", "")]
    examples = [encode_pair(tokenizer, p, r, 64) for p, r in pairs]
    batch = collate_sft(examples, tokenizer.pad_token_id)
    out = model(**batch)  # Hugging Face's own loss: logits everywhere, the mean over labels
    total, count = sft_loss_sum(model, batch)
    assert count == labelled_tokens(examples) == int((batch["labels"][:, 1:] != -100).sum())
    assert float(total) == pytest.approx(float(out.loss) * count, rel=1e-5)
    # a model whose forward has no logits_to_keep gets the same sum from all its logits
    plain = WithoutLogitsToKeep(model)
    assert not takes_logits_to_keep(plain)
    total_plain, _ = sft_loss_sum(plain, batch)
    assert float(total_plain) == pytest.approx(float(total), rel=1e-5)
    # the model under LoRA adapters still keeps only the logits it needs
    assert takes_logits_to_keep(model) and takes_logits_to_keep(
        add_lora(model, LoraOptions(), "causal_lm")
    )


def test_whiten_in_one_process_is_masked_whiten():
    x = torch.tensor([[1.0, 2.0, 9.0], [4.0, -3.0, 5.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    expected = ppo_math.masked_whiten(x, mask)
    assert torch.allclose(whiten(x, mask, Group(), ppo_math.WHITEN_EPS), expected, atol=1e-6)
    assert whiten(x, mask, Group(), 1e-8)[0, 2] == 9.0  # padding keeps its value


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_row_seeded_sampling_draws_from_the_softmax(temperature):
    # the Gumbel-max trick: argmax(logits / T + Gumbel noise) ~ softmax(logits / T)
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    n = 4000
    picked = RowSeededSampling(list(range(n)), temperature)(
        probs.log().expand(n, 4), torch.arange(n)
    )
    frequencies = torch.bincount(picked, minlength=4).float() / n
    expected = torch.softmax(probs.log() / temperature, -1)
    assert torch.allclose(frequencies, expected, atol=0.03), (frequencies, expected)


def test_a_row_seeded_response_does_not_depend_on_its_batch():
    tokenizer = tiny_tokenizer()
    model = build_gpt2(tokenizer, TINY_GPT2, seed=1)
    prompts = ["reverse the word stone", "what is 12 + 30?", "the capital of Velm"]
    together = generate(model, tokenizer, prompts, 12, 1.0, row_seeds=[11, 12, 13]).texts
    alone = [
        generate(model, tokenizer, [p], 12, 1.0, row_seeds=[s]).texts[0]
        for p, s in zip(prompts, [11, 12, 13], strict=True)
    ]
    split = generate(model, tokenizer, prompts[1:], 12, 1.0, row_seeds=[12, 13]).texts
    assert together == alone and together[1:] == split
    assert generate(model, tokenizer, prompts, 12, 1.0, row_seeds=[21, 22, 23]).texts != together


def test_only_a_launched_process_other_than_rank_0_stays_silent(monkeypatch):
    monkeypatch.delenv(LAUNCHED_ENV, raising=False)
    monkeypatch.setenv("RANK", "3")  # a scheduler's RANK for a job that runs the pipeline whole
    assert main_process()
    monkeypatch.setenv(LAUNCHED_ENV, "1")  # a process instructflow.tasks.launch started
    assert not main_process()
    monkeypatch.setenv("RANK", "0")
    assert main_process()
