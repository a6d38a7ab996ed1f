"""Tests for batched generation and response log-probs, on GPT-2 and Llama."""

from pathlib import Path

import pytest
import torch

from instructflow.models.batching import encode_prompt
from instructflow.models.formatting import format_prompt, parse_response
from instructflow.models.lm import build_gpt2, load_causal_lm
from instructflow.models.sampling import (
    generate,
    position_ids_from_mask,
    response_mask_from_ids,
    sample_responses,
    sequence_logprobs,
)
from tests.models.test_lm import ARCHS, TINY_GPT2, save_tiny_checkpoint, tiny_tokenizer

PROMPTS = ["reverse the word stone", "hi", "what is 12 + 30? answer with a number please"]


@pytest.fixture(scope="module", params=ARCHS)
def policy(request, tmp_path_factory):
    path = save_tiny_checkpoint(request.param, tmp_path_factory.mktemp(request.param) / "ckpt")
    model, tokenizer = load_causal_lm(path)
    return model.eval(), tokenizer


def eos_heavy_model(p_eos: float):
    """A GPT-2 whose next token ignores the context: EOS with probability
    `p_eos`, else uniform over ordinary tokens (never pad). Makes EOS land
    mid-response so the masks after it can be checked."""
    tokenizer = tiny_tokenizer()
    model = build_gpt2(tokenizer, TINY_GPT2, seed=0)
    vocab = len(tokenizer)
    head = torch.nn.Linear(TINY_GPT2.n_embd, vocab, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        others = vocab - 2
        head.bias.fill_(0.0)
        head.bias[tokenizer.eos_token_id] = torch.log(torch.tensor(p_eos / (1 - p_eos) * others))
        head.bias[tokenizer.pad_token_id] = -1e4
    model.lm_head = head
    return model.eval(), tokenizer


# ---------------------------------------------------------------- masks


def test_response_mask_stops_after_first_eos() -> None:
    eos = 0
    ids = torch.tensor([[5, eos, 7, eos], [5, 6, 7, 8], [eos, 1, 1, 1]])
    assert response_mask_from_ids(ids, eos).tolist() == [
        [1, 1, 0, 0],
        [1, 1, 1, 1],
        [1, 0, 0, 0],
    ]


def test_position_ids_skip_left_padding() -> None:
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 3]]


# ---------------------------------------------------------------- generate


def test_generate_shapes_and_left_padding(policy) -> None:
    model, tokenizer = policy
    rollout = generate(model, tokenizer, PROMPTS, max_new_tokens=6)
    lengths = [len(encode_prompt(tokenizer, format_prompt(p))) for p in PROMPTS]
    batch, width = len(PROMPTS), max(lengths)
    assert rollout.prompt_len == width
    assert rollout.query_response.shape == (batch, width + 6)
    assert rollout.response_ids.shape == rollout.response_mask.shape == (batch, 6)
    assert rollout.truncated.shape == (batch,) and rollout.truncated.dtype == torch.bool
    assert len(rollout.texts) == batch
    # prompts are left padded: the attention mask counts exactly the prompt tokens
    prompt_mask = rollout.attention_mask[:, :width]
    assert prompt_mask.sum(1).tolist() == lengths
    assert (prompt_mask[:, -1] == 1).all()
    assert torch.equal(rollout.attention_mask[:, width:], rollout.response_mask)


def test_response_mask_and_texts_after_eos() -> None:
    # given: a model that ends responses at random points
    model, tokenizer = eos_heavy_model(p_eos=0.15)
    torch.manual_seed(0)
    rollout = generate(model, tokenizer, PROMPTS * 8, max_new_tokens=10, temperature=1.0)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    ended = 0
    for ids, mask, text, truncated in zip(
        rollout.response_ids.tolist(),
        rollout.response_mask.tolist(),
        rollout.texts,
        rollout.truncated.tolist(),
        strict=True,
    ):
        if eos in ids:
            # then: mask covers the tokens up to and including the first EOS ...
            end = ids.index(eos) + 1
            assert mask == [1] * end + [0] * (10 - end)
            assert all(t == pad for t in ids[end:])  # ... and only padding follows
            assert not truncated
            ended += 1
        else:
            assert mask == [1] * 10 and truncated
        kept = [t for t, m in zip(ids, mask, strict=True) if m and t != eos]
        assert text == parse_response(tokenizer.decode(kept))
    assert 0 < ended < len(rollout.texts)  # the test saw both cases


def test_greedy_is_deterministic_and_follows_the_argmax(policy) -> None:
    model, tokenizer = policy
    first = generate(model, tokenizer, PROMPTS, max_new_tokens=8, greedy=True)
    torch.manual_seed(123)  # greedy ignores the RNG
    second = generate(model, tokenizer, PROMPTS, max_new_tokens=8, greedy=True)
    assert torch.equal(first.query_response, second.query_response)
    assert first.texts == second.texts
    # each greedy token is the argmax of one batched forward with our position ids,
    # so generate (KV cache) and sequence_logprobs read the same positions
    with torch.no_grad():
        logits = model(
            input_ids=first.query_response,
            attention_mask=first.attention_mask,
            position_ids=position_ids_from_mask(first.attention_mask),
        ).logits
    p = first.prompt_len
    predicted = logits[:, p - 1 : p - 1 + 8].argmax(-1)
    mask = first.response_mask.bool()
    assert torch.equal(predicted[mask], first.response_ids[mask])


def test_generate_ignores_the_checkpoints_generation_defaults() -> None:
    # given: a model whose own generation_config would force greedy-like sampling
    model, tokenizer = eos_heavy_model(p_eos=0.01)
    model.generation_config.top_k = 1
    model.generation_config.repetition_penalty = 5.0
    torch.manual_seed(0)
    rollout = generate(model, tokenizer, ["hi"] * 8, max_new_tokens=5)
    # then: sampling is from the true (near-uniform) distribution: rows differ
    assert len(set(rollout.texts)) > 1
    assert model.generation_config.top_k == 1  # restored afterwards
    # and: an explicit top_k=1 is honoured
    narrow = generate(model, tokenizer, ["hi"] * 8, max_new_tokens=5, top_k=1)
    assert len(set(narrow.texts)) == 1


def test_prefix_is_part_of_the_query(policy) -> None:
    model, tokenizer = policy
    prefix = "Q: reverse the word stone\nA: enots\n\n"
    plain = generate(model, tokenizer, ["hi"], max_new_tokens=2, greedy=True)
    shot = generate(model, tokenizer, ["hi"], max_new_tokens=2, greedy=True, prefix=prefix)
    assert shot.prompt_len == len(encode_prompt(tokenizer, prefix + format_prompt("hi")))
    assert shot.prompt_len > plain.prompt_len


def test_sample_responses_is_seeded_and_grouped(policy) -> None:
    model, tokenizer = policy
    args = dict(num_samples=3, max_new_tokens=4, temperature=1.0, batch_size=4)
    torch.manual_seed(7)
    state = torch.get_rng_state()
    first = sample_responses(model, tokenizer, PROMPTS, seed=0, **args)
    assert torch.equal(torch.get_rng_state(), state)  # caller's RNG untouched
    assert first == sample_responses(model, tokenizer, PROMPTS, seed=0, **args)
    assert first != sample_responses(model, tokenizer, PROMPTS, seed=1, **args)
    assert [len(group) for group in first] == [3, 3, 3]


# ---------------------------------------------------------------- log-probs


def test_left_padded_logprobs_equal_unpadded(policy) -> None:
    # given: a batch of sampled responses to prompts of different lengths
    model, tokenizer = policy
    torch.manual_seed(0)
    rollout = generate(model, tokenizer, PROMPTS, max_new_tokens=6)
    with torch.no_grad():
        batched = sequence_logprobs(
            model,
            rollout.query_response,
            rollout.attention_mask,
            rollout.prompt_len,
            rollout.response_ids,
            rollout.response_mask,
        )
    assert batched.shape == (len(PROMPTS), 6)
    assert torch.isfinite(batched).all()
    # when: each sequence is scored alone, with no padding at all
    for row, prompt in enumerate(PROMPTS):
        prompt_ids = torch.tensor([encode_prompt(tokenizer, format_prompt(prompt))])
        n = int(rollout.response_mask[row].sum())
        response = rollout.response_ids[row : row + 1, :n]
        sequence = torch.cat([prompt_ids, response], dim=1)
        with torch.no_grad():
            alone = sequence_logprobs(
                model,
                sequence,
                torch.ones_like(sequence),
                prompt_ids.shape[1],
                response,
                torch.ones_like(response),
            )
        # then: the same log-probs, and zeros past the response
        torch.testing.assert_close(batched[row, :n], alone[0], atol=1e-5, rtol=0)
        assert (batched[row, n:] == 0).all()


def test_logprobs_carry_gradients_and_temperature(policy) -> None:
    model, tokenizer = policy
    torch.manual_seed(0)
    rollout = generate(model, tokenizer, PROMPTS[:2], max_new_tokens=4)
    inputs = (
        rollout.query_response,
        rollout.attention_mask,
        rollout.prompt_len,
        rollout.response_ids,
        rollout.response_mask,
    )
    logprobs = sequence_logprobs(model, *inputs)
    logprobs.sum().backward()
    assert model.get_input_embeddings().weight.grad is not None
    model.zero_grad()
    with torch.no_grad():
        hot = sequence_logprobs(model, *inputs, temperature=2.0)
    assert not torch.allclose(hot, logprobs.detach())


def test_generate_handles_a_prompt_only_longer_than_others(tmp_path: Path) -> None:
    # one long prompt among short ones: the shortest is mostly padding
    model, tokenizer = load_causal_lm(save_tiny_checkpoint("gpt2", tmp_path / "c"))
    prompts = ["x", "y " * 40]
    rollout = generate(model, tokenizer, prompts, max_new_tokens=3, greedy=True)
    alone = generate(model, tokenizer, ["x"], max_new_tokens=3, greedy=True)
    assert torch.equal(rollout.response_ids[0], alone.response_ids[0])


def test_generate_refuses_to_run_past_the_context(policy) -> None:
    model, tokenizer = policy
    with pytest.raises(ValueError, match="context length"):
        generate(model, tokenizer, ["hi"], max_new_tokens=200)


def test_logprobs_from_generation_equal_a_forward_pass_over_the_samples(tmp_path) -> None:
    from instructflow.models.lm import load_causal_lm
    from instructflow.models.sampling import generate, sequence_logprobs
    from tests.models.test_lm import save_tiny_checkpoint

    # given a policy's samples at temperature 0.7, with the log-probs generation computed
    model, tokenizer = load_causal_lm(save_tiny_checkpoint("gpt2", tmp_path / "m"))
    torch.manual_seed(0)
    prompts = ["reverse the word stone", "what is 12 + 30?", "hi"]
    ro = generate(model, tokenizer, prompts, max_new_tokens=6, temperature=0.7, with_logprobs=True)
    # then they are the log-probs one forward pass over prompt + response gives (0 after EOS)
    with torch.no_grad():
        forward = sequence_logprobs(
            model, ro.query_response, ro.attention_mask, ro.prompt_len,
            ro.response_ids, ro.response_mask, temperature=0.7,
        )  # fmt: skip
    torch.testing.assert_close(ro.logprobs, forward, atol=1e-5, rtol=1e-5)
    assert (ro.logprobs[ro.response_mask == 0] == 0).all()
    assert (ro.logprobs[ro.response_mask == 1] < 0).all()
