"""Bad base-model directories: refused before any training, naming the directory and the file."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from instructflow.tasks.tables import LINE
from instructflow.world import layout
from tests.bad_inputs.conftest import assert_names, refusal


def with_model(params, folder):
    return params(base_model=str(folder))


def set_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def truncate(path, keep=100):
    path.write_bytes(path.read_bytes()[:keep])


def sharded(folder, size="20KB"):
    """The weights saved again in shards of `size`, as a big model's are; the shard files."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    (folder / "model.safetensors").unlink()
    model.save_pretrained(folder, max_shard_size=size)
    shards = sorted(folder.glob("model-*-of-*.safetensors"))
    assert len(shards) > 1 and (folder / "model.safetensors.index.json").is_file()
    return shards


def pickled(folder, n_shards=1):
    """The weights as torch.save writes them: pytorch_model.bin, or shards and their index."""
    weights = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    if n_shards == 1:
        torch.save(weights, folder / "pytorch_model.bin")
        return [folder / "pytorch_model.bin"]
    names = sorted(weights)
    files = [f"pytorch_model-{i + 1:05d}-of-{n_shards:05d}.bin" for i in range(n_shards)]
    weight_map = {}
    for i, file in enumerate(files):
        part = names[i::n_shards]
        torch.save({name: weights[name] for name in part}, folder / file)
        weight_map |= dict.fromkeys(part, file)
    index = {"metadata": {}, "weight_map": weight_map}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    return [folder / file for file in files]


def tokens_added(folder, tokens=("<|user|>", "<|assistant|>")):
    """Tokens added to the tokenizer, and the model's embeddings left as they were (no
    model.resize_token_embeddings): a chat template's markers, as users add them."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    tokenizer.add_tokens(list(tokens))
    tokenizer.save_pretrained(folder)


def eos_unset(folder):
    """A tokenizer saved without an EOS token (a Llama tokenizer some conversions leave so)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    tokenizer.eos_token = None
    tokenizer.save_pretrained(folder)


# (id, how to break the copy, file under the model dir ("" = the dir), field, words)
CASES = [
    ("no-config", lambda m: (m / "config.json").unlink(), "", "config.json", "missing"),
    (
        "config-not-json",
        lambda m: (m / "config.json").write_text("{oops"),
        "config.json",
        LINE,
        "json",
    ),
    (
        "unknown-model-type",
        lambda m: set_config(m, model_type="no_such_arch"),
        "config.json",
        "model_type",
        "",
    ),
    (
        "not-a-causal-lm",
        lambda m: set_config(m, model_type="vit"),
        "config.json",
        "model_type",
        "causal",
    ),
    (
        # transformers has a causal LM for it but no sequence-classification class: no RM
        "no-reward-head",
        lambda m: set_config(m, model_type="granite"),
        "config.json",
        "model_type",
        "no sequence-classification class",
    ),
    (
        # an encoder: its classifier reads a pooled token, not the last one
        "encoder",
        lambda m: set_config(
            m, model_type="bert", hidden_size=32, intermediate_size=64, num_attention_heads=2
        ),
        "config.json",
        "model_type",
        "not a decoder",
    ),
    (
        "config-its-class-refuses",
        lambda m: set_config(m, model_type="bert", hidden_size=32, num_attention_heads=12),
        "config.json",
        "model_type",
        "hidden size (32) is not a multiple of the number of attention heads (12)",
    ),
    (
        "invalid-config-field",
        lambda m: set_config(m, n_positions=None),
        "config.json",
        "n_positions",
        "expected int",
    ),
    (
        "no-weights",
        lambda m: (m / "model.safetensors").unlink(),
        "",
        "model.safetensors",
        "no weights",
    ),
    (
        "truncated-weights",
        lambda m: truncate(m / "model.safetensors"),
        "model.safetensors",
        "weights",
        "unreadable safetensors",
    ),
    (
        "missing-shard",
        lambda m: sharded(m)[1].unlink(),
        "model-00002-of-00003.safetensors",
        "weights",
        "missing: model.safetensors.index.json names it",
    ),
    (
        "truncated-shard",
        lambda m: truncate(sharded(m)[-1]),
        "model-00003-of-00003.safetensors",
        "weights",
        "unreadable safetensors",
    ),
    (
        "index-not-json",
        lambda m: (sharded(m), (m / "model.safetensors.index.json").write_text("{oops")),
        "model.safetensors.index.json",
        "weights",
        "not a sharded-weights index",
    ),
    (
        "truncated-bin",
        lambda m: truncate(pickled(m)[0], keep=4000),
        "pytorch_model.bin",
        "weights",
        "truncated or damaged",
    ),
    (
        "missing-bin-shard",
        lambda m: pickled(m, n_shards=2)[0].unlink(),
        "pytorch_model-00001-of-00002.bin",
        "weights",
        "missing: pytorch_model.bin.index.json names it",
    ),
    (
        "no-tokenizer",
        lambda m: [p.unlink() for p in m.iterdir() if p.name.startswith("tokenizer")],
        "",
        "tokenizer",
        "no tokenizer files (tokenizer.json, ",  # transformers' lines named none
    ),
    (
        # SFT's first batch with one of them stopped the run with IndexError, exit 1
        "tokens-past-embeddings",
        tokens_added,
        "",
        "tokenizer",
        "have none; resize them, model.resize_token_embeddings(len(tokenizer))",
    ),
    (
        "no-eos",
        eos_unset,
        "",
        "tokenizer",
        "has no EOS token (each response ends with it): name one of its tokens and save it again",
    ),
    (
        # a copy that left tokenizer.json behind: transformers' five lines named no file
        "no-vocabulary",
        lambda m: (m / "tokenizer.json").unlink(),
        "",
        "tokenizer",
        "tokenizer_config.json but no vocabulary file (tokenizer.json, ",
    ),
]


@pytest.mark.parametrize(
    ("breaking", "file", "field", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_a_bad_model_dir_is_refused_naming_it(
    smoke_dir, model_copy, params, breaking, file, field, words
):
    # given a loadable model directory with one thing broken
    breaking(model_copy)
    # then checking the run's inputs names the directory (or its file) and what is wrong
    where = model_copy / file if file else model_copy
    assert_names(refusal(with_model(params, model_copy), smoke_dir), where, 0, field, words)


def test_a_missing_model_dir_is_named(smoke_dir, params, tmp_path):
    missing = tmp_path / "no-model"
    assert_names(
        refusal(with_model(params, missing), smoke_dir), missing, 0, "base_model", "no such"
    )


def test_a_models_file_given_for_its_directory_is_named_as_a_file(smoke_dir, model_copy, params):
    config = model_copy / "config.json"
    assert_names(
        refusal(with_model(params, config), smoke_dir), config, 0, "base_model", "a file, not"
    )


def test_rows_longer_than_a_small_context_are_named(smoke_dir, model_copy, params):
    # given a model whose context is 48 tokens: the few-shot evaluation prompts cannot fit
    set_config(model_copy, n_positions=48)
    problems = refusal(with_model(params, model_copy), smoke_dir)
    assert_names(problems, smoke_dir / layout.EVAL_TEST, 1, "prompt", "context 48")


def test_the_good_model_dir_passes(smoke_dir, good_model_dir, params):
    from instructflow.tasks.preflight import check_inputs

    check_inputs(with_model(params, good_model_dir), smoke_dir)


@pytest.mark.parametrize(
    "saving",
    [sharded, pickled, lambda m: pickled(m, n_shards=2)],
    ids=["sharded-safetensors", "pytorch-bin", "sharded-pytorch-bin"],
)
def test_weights_in_other_layouts_pass_and_load(smoke_dir, model_copy, params, saving):
    from instructflow.models.lm import load_causal_lm
    from instructflow.tasks.preflight import check_inputs

    # given the good model's weights in shards, or as torch.save files
    saving(model_copy)
    # then the checks let it through, and the stage's loader does load it
    check_inputs(with_model(params, model_copy), smoke_dir)
    model, _ = load_causal_lm(model_copy)
    assert model.get_output_embeddings().weight.shape[0] > 0


def test_a_peft_adapter_folder_is_named_as_one_with_its_base_model(tmp_path):
    # given a LoRA adapter saved by peft (adapter_config.json, adapter weights, no config.json),
    # as a fine-tune is often shared, passed as --base-model
    from instructflow.tasks.input_checks import config_file_problems

    adapter = tmp_path / "my-lora"
    adapter.mkdir()
    config = {"base_model_name_or_path": "org/base-1b", "peft_type": "LORA", "r": 8}
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    # then the refusal says what the folder is and what to pass instead, not only that
    # config.json is missing
    (problem,) = config_file_problems(adapter)
    assert problem.field == "config.json"
    assert "PEFT adapter" in problem.message and "org/base-1b" in problem.message
    assert "merge_and_unload" in problem.message


def test_a_folder_of_checkpoints_names_the_model_folders_in_it(tmp_path, good_model_dir):
    # given a Trainer's output_dir passed as --base-model: no config.json, checkpoint-N/ inside
    from instructflow.tasks.input_checks import config_file_problems

    output_dir = tmp_path / "output"
    for step in (500, 1000):
        shutil.copytree(good_model_dir, output_dir / f"checkpoint-{step}")
    # then the refusal names them, not only that it is no model folder
    (problem,) = config_file_problems(output_dir)
    assert problem.field == "config.json"
    assert problem.message.endswith(
        "not a Hugging Face model dir; model folders in it: checkpoint-1000, checkpoint-500:"
        " pass one of them"
    )
    # and two levels down too (a Hub cache folder's snapshots/<revision>/)
    (problem,) = config_file_problems(tmp_path)
    assert "model folders in it: output/checkpoint-1000, output/checkpoint-500" in problem.message
    # while a folder with none says only what it is not
    (tmp_path / "empty").mkdir()
    (problem,) = config_file_problems(tmp_path / "empty")
    assert problem.message == "missing: not a Hugging Face model dir"
