"""Decoding with each row dropped at its EOS (instructflow.models.decoding) against transformers' generate."""

from contextlib import contextmanager

import pytest
import torch
from transformers import GenerationConfig

from instructflow.models.batching import pad_batch
from instructflow.models.decoding import decode, greedy, multinomial_sampler
from instructflow.models.lm import load_causal_lm
from instructflow.models.sampling import encode_prompts
from tests.models.test_lm import ARCHS, save_tiny_checkpoint

PROMPTS = [
    "reverse the word stone",
    "hi",
    "what is 12 + 30? answer with a number please",
    "sort 3 1 2",
    "the capital of Velm",
    "ok",
]
NEW_TOKENS = 10


@pytest.fixture(scope="module", params=ARCHS)
def policy(request, tmp_path_factory):
    path = save_tiny_checkpoint(request.param, tmp_path_factory.mktemp(request.param) / "ckpt")
    model, tokenizer = load_causal_lm(path)
    return model.eval(), tokenizer


@contextmanager
def likely_eos(model, tokenizer, bias: float = 3.0):
    """EOS made likely at every step, so that rows end at different steps (both decoders see it)."""

    def add_bias(module, inputs, output):
        output[..., tokenizer.eos_token_id] += bias
        return output

    handle = model.get_output_embeddings().register_forward_hook(add_bias)
    try:
        yield
    finally:
        handle.remove()


def left_padded(tokenizer):
    ids = encode_prompts(tokenizer, PROMPTS)
    query = pad_batch(ids, tokenizer.pad_token_id, side="left")
    mask = pad_batch([[1] * len(row) for row in ids], 0, side="left")
    return query, mask


def generate_reference(model, tokenizer, query, mask, **decoding):
    """transformers' generate: [B, NEW_TOKENS] tokens (pad-filled past its last step) and its logits."""
    config = GenerationConfig(
        max_new_tokens=NEW_TOKENS,
        num_beams=1,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        output_logits=True,
        return_dict_in_generate=True,
        **decoding,
    )
    out = model.generate(input_ids=query, attention_mask=mask, generation_config=config)
    tokens = out.sequences[:, query.shape[1] :]
    tokens = torch.nn.functional.pad(
        tokens, (0, NEW_TOKENS - tokens.shape[1]), value=tokenizer.pad_token_id
    )
    return tokens, torch.stack(out.logits, dim=1)


def ended_at(tokens, eos_id):
    """Per row, the step of its EOS (NEW_TOKENS when it has none)."""
    is_eos = tokens == eos_id
    return torch.where(is_eos.any(1), is_eos.float().argmax(1), torch.tensor(NEW_TOKENS))


@pytest.mark.parametrize("temperature, top_k", [(0.7, None), (1.3, 5)])
def test_sampled_tokens_and_the_random_state_after_are_generates(policy, temperature, top_k):
    model, tokenizer = policy
    query, mask = left_padded(tokenizer)
    with likely_eos(model, tokenizer):
        torch.manual_seed(3)
        ours = decode(
            model,
            query,
            mask,
            NEW_TOKENS,
            tokenizer.eos_token_id,
            tokenizer.pad_token_id,
            multinomial_sampler(temperature, top_k, len(PROMPTS)),
            keep_logits=True,
        )
        ours_next_draw = torch.rand(4)
        torch.manual_seed(3)
        theirs, their_logits = generate_reference(
            model, tokenizer, query, mask, do_sample=True, temperature=temperature,
            top_k=top_k or 0, top_p=1.0,
        )  # fmt: skip
        their_next_draw = torch.rand(4)
    # then the same tokens, from the same draws, in as many steps
    assert torch.equal(ours.tokens, theirs)
    assert torch.equal(ours_next_draw, their_next_draw)
    assert len(ours.logits) == their_logits.shape[1]
    # rows ended at different steps, so rows did leave the batch early
    ends = ended_at(ours.tokens, tokenizer.eos_token_id)
    assert len(set(ends.tolist())) > 1 and int(ends.min()) < len(ours.logits) - 1
    # and each row's logits agree up to its EOS (where the row was still in the batch)
    our_logits = torch.stack(ours.logits, dim=1)
    for row, end in enumerate(ends.tolist()):
        steps = slice(0, end + 1)
        assert torch.allclose(our_logits[row, steps], their_logits[row, steps], atol=1e-5)


def test_greedy_tokens_are_generates(policy):
    model, tokenizer = policy
    query, mask = left_padded(tokenizer)
    with likely_eos(model, tokenizer, bias=1.0):
        ours = decode(
            model, query, mask, NEW_TOKENS, tokenizer.eos_token_id, tokenizer.pad_token_id, greedy
        )
        theirs, _ = generate_reference(model, tokenizer, query, mask, do_sample=False)
    assert torch.equal(ours.tokens, theirs)


def test_a_row_leaves_the_batch_at_its_eos_and_pads_after(policy):
    model, tokenizer = policy
    query, mask = left_padded(tokenizer)
    eos, pad, word = tokenizer.eos_token_id, tokenizer.pad_token_id, 7
    widths: list[int] = []
    hook = model.register_forward_pre_hook(
        lambda module, args, kwargs: widths.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )

    def scripted(logits, rows):
        # row 0 ends at step 0, row 3 at step 1 (its second call), the others never
        step = len(widths) - 1
        ends = {0: 0, 3: 1}
        return torch.tensor([eos if ends.get(r) == step else word for r in rows.tolist()])

    try:
        out = decode(model, query, mask, 4, eos, pad, scripted)
    finally:
        hook.remove()
    batch = len(PROMPTS)
    assert widths == [batch, batch - 1, batch - 2, batch - 2]
    assert out.tokens[0].tolist() == [eos, pad, pad, pad]
    assert out.tokens[3].tolist() == [word, eos, pad, pad]
    assert out.tokens[1].tolist() == [word] * 4


def test_decoding_stops_once_every_row_has_ended(policy):
    model, tokenizer = policy
    query, mask = left_padded(tokenizer)
    eos = tokenizer.eos_token_id
    out = decode(
        model, query, mask, 5, eos, tokenizer.pad_token_id,
        lambda logits, rows: torch.full((len(rows),), eos), keep_logits=True,
    )  # fmt: skip
    assert len(out.logits) == 1
    assert (out.tokens[:, 0] == eos).all() and (out.tokens[:, 1:] == tokenizer.pad_token_id).all()
