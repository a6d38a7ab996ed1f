"""Tests for the scalar-head reward model built from a causal-LM checkpoint."""

import json
from pathlib import Path

import pytest
import torch

from instructflow.models.lm import load_causal_lm, save_model
from instructflow.models.reward_model import (
    encode_for_reward,
    last_token_index,
    reward_model_from_causal_lm,
    rewards,
    set_reward_offset,
    token_values,
)
from instructflow.models.sampling import generate, position_ids_from_mask
from tests.models.test_lm import ARCHS, _save_padless, padless_tokenizer, save_tiny_checkpoint

PROMPTS = ["reverse the word stone", "what is 12 + 30?", "hi"]
RESPONSES = ["enots", "42", "hello there, how can I help"]


@pytest.fixture(scope="module", params=ARCHS)
def sft_dir(request, tmp_path_factory) -> Path:
    return save_tiny_checkpoint(request.param, tmp_path_factory.mktemp(request.param) / "sft")


@pytest.fixture()
def reward_model(sft_dir):
    model, tokenizer = reward_model_from_causal_lm(sft_dir)
    return model.eval(), tokenizer


def test_built_from_the_sft_trunk(sft_dir: Path, reward_model) -> None:
    model, tokenizer = reward_model
    lm, _ = load_causal_lm(sft_dir)
    # the trunk's weights come from the SFT checkpoint, the head is a new scalar
    torch.testing.assert_close(
        model.get_input_embeddings().weight, lm.get_input_embeddings().weight
    )
    assert model.score.out_features == 1
    assert model.config.pad_token_id == tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.config.reward_offset == 0.0
    # the head's init is seeded
    again, _ = reward_model_from_causal_lm(sft_dir)
    assert torch.equal(model.score.weight, again.score.weight)


def test_encode_for_reward_matches_sft_format(reward_model) -> None:
    _, tokenizer = reward_model
    ids, mask = encode_for_reward(tokenizer, PROMPTS, RESPONSES, max_len=64)
    lengths = mask.sum(1)
    assert (mask[:, 0] == 1).all()  # right padded
    assert (ids[torch.arange(3), lengths - 1] == tokenizer.eos_token_id).all()
    assert (ids[mask == 0] == tokenizer.pad_token_id).all()
    assert tokenizer.decode(ids[0, : lengths[0] - 1]) == "Q: reverse the word stone\nA: enots"
    with pytest.raises(ValueError):
        encode_for_reward(tokenizer, PROMPTS, RESPONSES, max_len=8)


def test_reward_is_read_at_the_final_eos(reward_model) -> None:
    model, tokenizer = reward_model
    ids, mask = encode_for_reward(tokenizer, PROMPTS, RESPONSES, max_len=64)
    with torch.no_grad():
        scores = rewards(model, ids, mask)
        # the same number HF's own sequence-classification forward gives (it looks for pad ids)
        hf = model(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
        # and the same as each sequence alone
        alone = torch.stack(
            [
                rewards(
                    model,
                    ids[i : i + 1, : int(mask[i].sum())],
                    mask[i : i + 1, : int(mask[i].sum())],
                )
                for i in range(3)
            ]
        ).squeeze(1)
    assert scores.shape == (3,)
    torch.testing.assert_close(scores, hf, atol=1e-5, rtol=0)
    torch.testing.assert_close(scores, alone, atol=1e-5, rtol=0)
    # the EOS is what is read: dropping it changes the reward
    row = 0
    n = int(mask[row].sum())
    with torch.no_grad():
        without_eos = rewards(model, ids[row : row + 1, : n - 1], mask[row : row + 1, : n - 1])
    assert not torch.allclose(without_eos, scores[row : row + 1])


def test_padding_does_not_change_the_reward(reward_model) -> None:
    model, tokenizer = reward_model
    ids, mask = encode_for_reward(tokenizer, PROMPTS, RESPONSES, max_len=64)
    with torch.no_grad():
        base = rewards(model, ids, mask)
        # appending more pad columns
        more_ids = torch.nn.functional.pad(ids, (0, 5), value=tokenizer.pad_token_id)
        more_mask = torch.nn.functional.pad(mask, (0, 5), value=0)
        padded = rewards(model, more_ids, more_mask)
        # putting other ids in the padded slots (e.g. a policy that pads with EOS)
        junk_ids = more_ids.masked_fill(more_mask == 0, tokenizer.eos_token_id)
        junk = rewards(model, junk_ids, more_mask)
    torch.testing.assert_close(padded, base, atol=1e-5, rtol=0)
    torch.testing.assert_close(junk, base, atol=1e-5, rtol=0)


def test_token_values_agree_with_rewards_on_left_padded_rollouts(sft_dir, reward_model) -> None:
    # given: a rollout from the policy (left-padded prompts, padding after EOS)
    model, tokenizer = reward_model
    policy, _ = load_causal_lm(sft_dir)
    torch.manual_seed(0)
    rollout = generate(policy, tokenizer, PROMPTS, max_new_tokens=5)
    qr, mask = rollout.query_response, rollout.attention_mask
    with torch.no_grad():
        values = token_values(model, qr, mask, position_ids_from_mask(mask))
        scores = rewards(model, qr, mask)
    # then: the value at each sequence's last real token is its reward
    assert values.shape == qr.shape
    last = last_token_index(mask)
    torch.testing.assert_close(values[torch.arange(3), last], scores)
    # and: left padding does not change the reward of a sequence
    for row in range(3):
        keep = mask[row].bool()
        with torch.no_grad():
            alone = rewards(model, qr[row : row + 1, keep], mask[row : row + 1, keep])
        torch.testing.assert_close(alone[0], scores[row], atol=1e-5, rtol=0)


def test_offset_is_added_and_saved(reward_model, tmp_path: Path) -> None:
    model, tokenizer = reward_model
    ids, mask = encode_for_reward(tokenizer, PROMPTS, RESPONSES, max_len=64)
    with torch.no_grad():
        before = rewards(model, ids, mask)
        set_reward_offset(model, -0.75)
        after = rewards(model, ids, mask)
    torch.testing.assert_close(after, before - 0.75)
    # saved with the config and restored by the loader, trained head included
    save_model(model, tokenizer, tmp_path / "rm")
    assert json.loads((tmp_path / "rm" / "config.json").read_text())["reward_offset"] == -0.75
    reloaded, reloaded_tok = reward_model_from_causal_lm(tmp_path / "rm", seed=99)
    assert reloaded.config.reward_offset == -0.75
    with torch.no_grad():
        torch.testing.assert_close(rewards(reloaded.eval(), ids, mask), after)


def test_gradients_reach_trunk_and_head(reward_model) -> None:
    model, tokenizer = reward_model
    ids, mask = encode_for_reward(tokenizer, PROMPTS[:2], RESPONSES[:2], max_len=64)
    rewards(model, ids, mask).sum().backward()
    assert model.score.weight.grad is not None
    assert model.get_input_embeddings().weight.grad is not None


@pytest.mark.parametrize("spare_rows", [0, 8])
def test_pad_distinct_from_eos_even_if_the_lm_has_none(tmp_path: Path, spare_rows: int) -> None:
    # given: a causal LM whose tokenizer has no pad token
    path = _save_padless(tmp_path, spare_rows=spare_rows)
    model, tokenizer = reward_model_from_causal_lm(path)
    # then: the RM gets its own pad token, inside its embedding matrix
    assert tokenizer.pad_token_id is not None
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert tokenizer.pad_token_id < model.get_input_embeddings().weight.shape[0]
    ids, mask = encode_for_reward(tokenizer, PROMPTS, RESPONSES, max_len=64)
    with torch.no_grad():
        hf = model(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
        torch.testing.assert_close(rewards(model, ids, mask), hf, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("specials", "named", "pad"),
    [
        (("<unk>",), {"unk_token": "<unk>"}, "<unk>"),  # Llama 2, Mistral
        (("<|finetune_right_pad_id|>",), {}, "<|finetune_right_pad_id|>"),  # Llama 3.1
    ],
)
def test_a_full_embedding_pads_with_a_token_it_has(tmp_path: Path, specials, named, pad) -> None:
    # given: a causal LM with no pad token and no spare embedding row, whose vocabulary
    # holds an unknown token or a pad token by another name
    tokenizer = padless_tokenizer(specials, **named)
    path = _save_padless(tmp_path, spare_rows=0, tokenizer=tokenizer)
    model, tokenizer = reward_model_from_causal_lm(path)
    # then: the RM pads with that token, and its embedding matrix keeps its shape (with
    # LoRA a resized matrix would be saved whole with the adapter)
    assert tokenizer.pad_token == pad != tokenizer.eos_token
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    assert model.config.pad_token_id == tokenizer.pad_token_id


def test_rows_scored_by_length_groups_equal_one_padded_batch(reward_model, monkeypatch) -> None:
    from instructflow.models import length_groups as length_groups_module

    # given 24 sequences of very different lengths, right-padded into one batch
    model, tokenizer = reward_model
    prompts = [PROMPTS[i % 3] + " please" * (i % 7) for i in range(24)]
    responses = [RESPONSES[i % 3] + " yes" * (i % 5) for i in range(24)]
    ids, mask = encode_for_reward(tokenizer, prompts, responses, max_len=96)
    # when they are scored in length groups (24 rows: 3 groups), with gradients on
    grouped = rewards(model, ids, mask)
    # then each reward is the one-batch reward, read at the last token (the formula before grouping)
    whole = token_values(model, ids, mask).gather(1, last_token_index(mask).unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(grouped, whole, atol=1e-5, rtol=1e-5)
    # and in the rows' own order, whatever their lengths
    monkeypatch.setattr(length_groups_module, "LENGTH_GROUPS", 1)
    torch.testing.assert_close(rewards(model, ids, mask), whole, atol=1e-5, rtol=1e-5)
    # and gradients flow from every group to the trunk
    grouped.sum().backward()
    assert all(p.grad is not None for p in model.score.parameters())
    assert model.base_model.get_input_embeddings().weight.grad.abs().sum() > 0


def test_reward_head_problem_names_architectures_the_rm_cannot_be_built_on():
    from transformers import BertConfig, GPT2Config, GraniteConfig, LlamaConfig

    from instructflow.models.reward_model import reward_head_problem

    small = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2}
    # decoders with a sequence-classification class (a `score` head at the last token)
    assert reward_head_problem(GPT2Config(n_embd=32, n_layer=1, n_head=2)) is None
    assert reward_head_problem(LlamaConfig(num_hidden_layers=1, **small)) is None
    # a causal LM without one, and an encoder whose class pools for a `classifier`
    granite = reward_head_problem(GraniteConfig(num_hidden_layers=1, **small))
    assert "'granite' has no sequence-classification class" in granite
    bert = reward_head_problem(BertConfig(num_hidden_layers=1, **small))
    assert "'bert' is not a decoder" in bert and "BertForSequenceClassification" in bert


def test_a_sample_longer_once_re_encoded_is_scored_cut_to_the_context(reward_model) -> None:
    from instructflow.models.lm import context_length
    from instructflow.tasks.judge import HeldOutJudge

    # given a sampled text that re-encodes to more tokens than were sampled: bytes of one
    # character sampled as separate tokens decode to U+FFFD, three bytes when encoded again
    # (a 128-token GPT-2's evaluation failed on one, after every stage had trained)
    model, tokenizer = reward_model
    n = context_length(model)
    text = "\ufffd" * n
    # then the held-out judge scores it cut at the context's end, its EOS kept
    [score] = HeldOutJudge(model, tokenizer).score(["hi"], [text])
    ids, mask = encode_for_reward(tokenizer, ["hi"], [text], n, cut_responses=True)
    assert int(mask.sum()) == n and int(ids[0, -1]) == tokenizer.eos_token_id
    with torch.no_grad():
        assert score == pytest.approx(rewards(model, ids, mask).item())
    # and a response that fits is encoded as before
    short, _ = encode_for_reward(tokenizer, PROMPTS, RESPONSES, max_len=64, cut_responses=True)
    assert torch.equal(short, encode_for_reward(tokenizer, PROMPTS, RESPONSES, max_len=64)[0])
    # while a row to train on still raises: rows are checked to fit before any training
    with pytest.raises(ValueError):
        encode_for_reward(tokenizer, ["hi"], [text], n)
