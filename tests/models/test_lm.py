"""Tests for building, loading and saving causal LMs.

The helpers at the top (tiny tokenizer, tiny GPT-2 / Llama checkpoints) are
shared with the sampling and reward-model tests.
"""

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from instructflow.models.lm import GPT2Size, build_gpt2, context_length, load_causal_lm, save_model
from instructflow.models.tokenizer import train_tokenizer

CORPUS = [
    "the capital of Velm is Orsk. the capital of Tarn is Bex.",
    "Q: reverse the word stone\nA: enots",
    "Q: what is 12 + 30?\nA: 42",
    "Q: count the letters in apple\nA: 5",
] * 5
TINY_GPT2 = GPT2Size(n_layer=2, n_head=2, n_embd=32, n_positions=128)
ARCHS = ["gpt2", "llama"]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    return train_tokenizer(CORPUS, vocab_size=320)


def save_tiny_checkpoint(arch: str, path: Path, seed: int = 0) -> Path:
    """A 2-layer GPT-2 or Llama with its tokenizer, saved as a HF directory."""
    tokenizer = tiny_tokenizer()
    if arch == "gpt2":
        model = build_gpt2(tokenizer, TINY_GPT2, seed=seed)
    else:
        config = LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=128,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    save_model(model, tokenizer, path)
    return path


def padless_tokenizer(extra_special: tuple[str, ...] = (), **named) -> PreTrainedTokenizerFast:
    """A tokenizer with EOS but no pad token (unless `extra_special` holds one; `named`:
    special-token roles, e.g. unk_token="<unk>", for tokens in `extra_special`)."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=270,
        special_tokens=["</s>", *extra_special],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="</s>", bos_token="</s>", **named
    )


# ---------------------------------------------------------------- build_gpt2


def test_build_gpt2_matches_tokenizer_and_is_deterministic() -> None:
    tokenizer = tiny_tokenizer()
    model = build_gpt2(tokenizer, TINY_GPT2, seed=3)
    config = model.config
    assert config.vocab_size == len(tokenizer)
    assert (config.eos_token_id, config.pad_token_id) == (
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    assert config.resid_pdrop == config.embd_pdrop == config.attn_pdrop == 0.0
    assert (config.n_layer, config.n_embd, context_length(model)) == (2, 32, 128)
    # same seed -> same weights, whatever the global RNG did in between
    torch.rand(10)
    again = build_gpt2(tokenizer, TINY_GPT2, seed=3)
    other = build_gpt2(tokenizer, TINY_GPT2, seed=4)
    assert torch.equal(model.transformer.wte.weight, again.transformer.wte.weight)
    assert not torch.equal(model.transformer.wte.weight, other.transformer.wte.weight)


# ---------------------------------------------------------------- save / load


@pytest.mark.parametrize("arch", ARCHS)
def test_save_then_load_round_trips(arch: str, tmp_path: Path) -> None:
    # given: a tiny checkpoint saved by save_model
    path = save_tiny_checkpoint(arch, tmp_path / "ckpt")
    assert (path / "model.safetensors").exists()
    # when: it is loaded twice
    model, tokenizer = load_causal_lm(path)
    again, _ = load_causal_lm(path)
    # then: the tokenizer keeps its specials and the model computes the same thing
    assert tokenizer.pad_token_id == model.config.pad_token_id != tokenizer.eos_token_id
    assert context_length(model) == 128
    ids = torch.tensor([tokenizer.encode("Q: reverse the word stone\nA:")])
    torch.testing.assert_close(model(ids).logits, again(ids).logits)


def test_save_model_overwrites_an_existing_checkpoint(tmp_path: Path) -> None:
    tokenizer = tiny_tokenizer()
    path = tmp_path / "ckpt"
    save_model(build_gpt2(tokenizer, TINY_GPT2, seed=0), tokenizer, path)
    second = build_gpt2(tokenizer, TINY_GPT2, seed=1)
    save_model(second, tokenizer, path)
    loaded, _ = load_causal_lm(path)
    assert torch.equal(loaded.transformer.wte.weight, second.transformer.wte.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no leftovers


def test_failing_save_leaves_nothing_at_path(tmp_path: Path, monkeypatch) -> None:
    # given: a tokenizer whose save dies after the model weights were written
    tokenizer = tiny_tokenizer()
    model = build_gpt2(tokenizer, TINY_GPT2, seed=0)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tokenizer, "save_pretrained", crash)
    # when: saving fails
    with pytest.raises(OSError, match="disk full"):
        save_model(model, tokenizer, tmp_path / "ckpt")
    # then: no checkpoint directory and no temp directory left behind
    assert list(tmp_path.iterdir()) == []


def test_failing_save_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    path = save_tiny_checkpoint("gpt2", tmp_path / "ckpt", seed=0)
    before = sorted(p.name for p in path.iterdir())
    tokenizer = tiny_tokenizer()
    monkeypatch.setattr(tokenizer, "save_pretrained", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        save_model(build_gpt2(tokenizer, TINY_GPT2, seed=1), tokenizer, path)
    assert sorted(p.name for p in path.iterdir()) == before
    load_causal_lm(path)  # still loadable


# ---------------------------------------------------------------- pad tokens


def _save_padless(tmp_path: Path, spare_rows: int, tokenizer=None) -> Path:
    tokenizer = tokenizer or padless_tokenizer()
    config = LlamaConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=len(tokenizer) + spare_rows,
        max_position_embeddings=64,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    return tmp_path


def test_missing_pad_is_added_when_the_embeddings_have_room(tmp_path: Path) -> None:
    # given: a checkpoint without pad whose embedding matrix has spare rows
    path = _save_padless(tmp_path, spare_rows=8)
    model, tokenizer = load_causal_lm(path)
    # then: a new, distinct pad token, and the weights keep their shape
    assert tokenizer.pad_token == "<|pad|>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.pad_token_id < model.get_input_embeddings().weight.shape[0]
    assert model.config.pad_token_id == tokenizer.pad_token_id


def test_missing_pad_reuses_eos_rather_than_resizing(tmp_path: Path) -> None:
    # given: a checkpoint without pad and with no spare embedding row
    path = _save_padless(tmp_path, spare_rows=0)
    model, tokenizer = load_causal_lm(path)
    # then: EOS doubles as pad and the vocabulary is untouched
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == model.config.pad_token_id
    assert len(tokenizer) == model.get_input_embeddings().weight.shape[0]


def test_context_length_is_generic() -> None:
    gpt2 = build_gpt2(
        tiny_tokenizer(), GPT2Size(n_layer=1, n_head=1, n_embd=8, n_positions=40), seed=0
    )
    llama = LlamaForCausalLM(
        LlamaConfig(
            hidden_size=8,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=1,
            num_key_value_heads=1,
            vocab_size=300,
            max_position_embeddings=77,
        )
    )
    assert (context_length(gpt2), context_length(llama)) == (40, 77)


def test_fused_activation_computes_gpt2s_gelu_and_is_not_saved(tmp_path):
    import math

    from transformers import GPT2LMHeadModel
    from transformers.activations import GELUTanh, NewGELUActivation

    from instructflow.models.lm import fused_activations

    # given a GPT-2 as transformers builds it (gelu_new), and the same weights swapped
    tokenizer = tiny_tokenizer()
    built = build_gpt2(tokenizer, TINY_GPT2, seed=0)
    plain = GPT2LMHeadModel(built.config)
    plain.load_state_dict(built.state_dict())
    assert isinstance(plain.transformer.h[0].mlp.act, NewGELUActivation)
    assert isinstance(built.transformer.h[0].mlp.act, GELUTanh)
    # then the activation is GeLU's tanh approximation, by its formula
    x = torch.linspace(-6, 6, 101)
    formula = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    torch.testing.assert_close(built.transformer.h[0].mlp.act(x), formula, atol=1e-6, rtol=1e-5)
    # and the whole model's logits agree with transformers' own to float rounding
    ids = torch.tensor([tokenizer("the capital of Velm is Orsk.")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(built(ids).logits, plain(ids).logits, atol=1e-5, rtol=1e-5)
    # and a saved model keeps GPT-2's own activation name; loading swaps it again
    save_model(built, tokenizer, tmp_path / "m")
    assert load_causal_lm(tmp_path / "m")[0].config.activation_function == "gelu_new"
    assert isinstance(load_causal_lm(tmp_path / "m")[0].transformer.h[0].mlp.act, GELUTanh)
    assert fused_activations(plain) is plain


def test_no_cache_forward_fills_no_cache_and_computes_the_same_logits():
    from transformers.cache_utils import DynamicCache

    from instructflow.models.lm import no_cache

    # given a GPT-2 whose config asks for a key/value cache (as transformers saves it)
    tokenizer = tiny_tokenizer()
    model = build_gpt2(tokenizer, TINY_GPT2, seed=0).eval()
    ids = torch.tensor([tokenizer("the capital of Velm is Orsk.")["input_ids"]])
    assert model.config.use_cache
    with torch.no_grad():
        cached, plain = model(ids), model(ids, **no_cache(model))
    # then a forward with no_cache returns no cache, and bit for bit the same logits
    assert isinstance(cached.past_key_values, DynamicCache)
    assert plain.past_key_values is None
    assert torch.equal(cached.logits, plain.logits)


def test_no_cache_gives_nothing_to_a_forward_without_the_switch():
    from instructflow.models.lm import no_cache

    class Bare(torch.nn.Module):
        def forward(self, input_ids):
            return input_ids

    assert no_cache(Bare()) == {}


def test_a_bf16_checkpoint_loads_with_fp32_weights_for_the_policy_and_the_reward_model(
    tmp_path: Path,
) -> None:
    from instructflow.models.reward_model import reward_model_from_causal_lm

    # given a Llama saved in bf16, as most published checkpoints are
    path = save_tiny_checkpoint("llama", tmp_path / "bf16")
    model, tokenizer = load_causal_lm(path)
    save_model(model.to(torch.bfloat16), tokenizer, path)
    # when a stage loads it as its policy or as its reward model
    policy, _ = load_causal_lm(path)
    rm, _ = reward_model_from_causal_lm(path)
    # then every weight is fp32 (precision only autocasts; AdamW updates are not rounded away)
    assert {p.dtype for p in policy.parameters()} == {torch.float32}
    assert {p.dtype for p in rm.parameters()} == {torch.float32}
    # and the values are the checkpoint's
    saved = model.to(torch.bfloat16).state_dict()["lm_head.weight"]
    torch.testing.assert_close(policy.state_dict()["lm_head.weight"], saved.float())


def test_perplexity_on_text_too_short_for_one_block_is_nan_not_a_perfect_one() -> None:
    import math

    from instructflow.models.lm_training import pack_corpus, perplexity

    tokenizer = tiny_tokenizer()
    model = build_gpt2(tokenizer, GPT2Size(n_layer=1, n_head=1, n_embd=8, n_positions=40), seed=0)
    # given held-out text that packs into no block of 32 tokens, and text that fills some
    none = pack_corpus(tokenizer, ["a b"], 32)
    some = pack_corpus(tokenizer, ["a b c d e f g h"] * 20, 32)
    assert none.shape[0] == 0 and some.shape[0] > 0
    # then nothing measured is no figure (it was exp(0) = 1.0, a perfect score, in every
    # policy's report row), while the text that fills blocks gets its perplexity
    assert math.isnan(perplexity(model, none))
    assert perplexity(model, some) > 1.0
