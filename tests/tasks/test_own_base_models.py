"""A user's base model: Llama-, Qwen2- and GPT-NeoX-style checkpoints with their kinds of tokenizer.

Built from config inside the test (no hub): a Qwen2 tokenizer with a ChatML
chat template, a GPT-NeoX one without a pad token, a Llama one whose EOS
differs from its BOS. Each goes through what a dataset run does with a base
model before training: lengths and rendering at import, the SFT encoding,
and the reward model scoring comparisons of mixed K.
"""

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from tokenizers import decoders as dec
from transformers import (
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from instructflow.models.batching import encode_pair
from instructflow.models.lm import load_causal_lm
from instructflow.models.reward_model import reward_model_from_causal_lm
from instructflow.tasks.dataset import load_dataset
from instructflow.tasks.lengths import length_check
from instructflow.tasks.reward_model import score_rows
from tests.own_data import write_hh_dataset

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

STYLES = {
    # name: (config class, model class, special tokens, chat template)
    "qwen2": (
        Qwen2Config,
        Qwen2ForCausalLM,
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        CHATML,
    ),
    "gpt_neox": (
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"},
        None,
    ),
    "llama": (LlamaConfig, LlamaForCausalLM, {"bos_token": "<s>", "eos_token": "</s>"}, None),
}


def bpe_tokenizer(texts: list[str], specials: dict[str, str]) -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = dec.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=sorted(set(specials.values())) + ["<|im_start|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, **specials)


def build(style: str, folder, texts):
    config_cls, model_cls, specials, template = STYLES[style]
    tokenizer = bpe_tokenizer(texts, specials)
    if template:
        tokenizer.chat_template = template
    sizes = {
        "qwen2": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 256,
        },
        "llama": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 256,
        },
        "gpt_neox": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 256,
        },
    }[style]
    ids = {f"{k[:-6]}_token_id": tokenizer.convert_tokens_to_ids(v) for k, v in specials.items()}
    config = config_cls(vocab_size=len(tokenizer), **sizes, **ids)
    torch.manual_seed(0)
    model_cls(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_hh_dataset(tmp_path_factory.mktemp("hh") / "hh", n_pairs=40)


@pytest.mark.parametrize("style", list(STYLES))
def test_a_base_model_of_each_style_imports_encodes_and_scores(style, dataset, tmp_path):
    texts = [line for f in dataset.iterdir() for line in f.read_text().splitlines()]
    folder = build(style, tmp_path / style, texts)
    _, _, specials, template = STYLES[style]

    # loading gives every tokenizer a pad token (GPT-NeoX has none of its own)
    model, tokenizer = load_causal_lm(folder)
    assert tokenizer.pad_token_id is not None
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids(specials["eos_token"])

    # import: a chat template renders conversations' prompts; without one they stay plain
    # text, as the prompts table's texts do with one
    data = load_dataset(dataset, lengths=length_check(str(folder), max_new_tokens=8))
    multi_turn = data.preferences[0].prompt
    if template:
        assert data.summary["rendering"] == (
            "chat_template (demonstrations.jsonl 40 rows, preferences.jsonl 40 rows),"
            " plain (prompts.jsonl 40 rows)"
        )
        assert multi_turn.startswith("<|im_start|>user\nHello.<|im_end|>")
        assert multi_turn.endswith("<|im_start|>assistant\n")
    else:
        assert data.summary["rendering"] == "plain"
        assert multi_turn.startswith("Human: Hello.")

    # SFT's encoding ends a response on this tokenizer's EOS (not its BOS)
    ids, labels = encode_pair(tokenizer, "Say apple twice.", "apple apple", max_len=256)
    assert ids[-1] == labels[-1] == tokenizer.eos_token_id
    if specials.get("bos_token") and specials["bos_token"] != specials["eos_token"]:
        assert tokenizer.bos_token_id != tokenizer.eos_token_id

    # the reward model scores K = 2 and K = 4 in one batch; padding leaves real scores alone
    rm, rm_tokenizer = reward_model_from_causal_lm(folder)
    rows = [
        {"prompt": "Say apple twice.", "responses": ["apple apple", "pear"]},
        {
            "prompt": "Say cedar twice.",
            "responses": ["cedar cedar", "no", "cedar", "I do not know."],
        },
    ]
    together = score_rows(rm, rm_tokenizer, rows, 256)
    alone = [score_rows(rm, rm_tokenizer, [row], 256)[0] for row in rows]
    assert together.shape == (2, 4)
    torch.testing.assert_close(together[0, :2], alone[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(together[1], alone[1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("style", list(STYLES))
def test_a_windows_line_break_in_a_response_reaches_training_as_written(style, dataset, tmp_path):
    # given a user's base model and a response holding "\r\n" (accepted as text at import)
    texts = [line for f in dataset.iterdir() for line in f.read_text().splitlines()]
    _, tokenizer = load_causal_lm(build(style, tmp_path / style, texts))
    # when SFT encodes it
    ids, labels = encode_pair(tokenizer, "Say apple twice.", "apple\r\napple", max_len=256)
    # then the trained-on tokens decode to the response as written, line break and all
    # (after the space the prompt format puts before a response)
    trained = [i for i, label in zip(ids, labels, strict=True) if label != -100]
    assert tokenizer.decode(trained, skip_special_tokens=True) == " apple\r\napple"
