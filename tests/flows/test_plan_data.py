"""`instructflow plan --data DIR --processes N`: lengths from the user's rows, batches per process."""

import json

import pytest

from instructflow.flows.cli import main
from instructflow.flows.params import PipelineParams
from instructflow.flows.plan import make_plan, per_process
from instructflow.models.batching import encode_pair, encode_prompt
from instructflow.models.formatting import format_prompt
from tests.own_data import write_pairwise_dataset
from tests.tiny_models import tiny_llama


@pytest.fixture
def data_and_model(tmp_path):
    folder = write_pairwise_dataset(tmp_path / "pairs", n=60)
    rows = [json.loads(line) for line in (folder / "preferences.jsonl").read_text().splitlines()]
    rows[7]["chosen"] = " ".join([rows[7]["chosen"]] * 4)  # one row far longer than the rest
    (folder / "preferences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    llama = tiny_llama(tmp_path / "llama", [(folder / "preferences.jsonl").read_text()])
    return folder, llama, rows


def test_plan_takes_the_longest_row_of_the_data_in_the_models_tokens(data_and_model, capsys):
    folder, llama, rows = data_and_model
    from transformers import AutoTokenizer

    # the rows as written, encoded directly (the tiny Llama has no chat template: plain prompts)
    tokenizer = AutoTokenizer.from_pretrained(llama)
    longest_pair = max(
        len(encode_pair(tokenizer, r["prompt"], r[side], 10**9)[0])
        for r in rows
        for side in ("chosen", "rejected")
    )
    longest_prompt = max(len(encode_prompt(tokenizer, format_prompt(r["prompt"]))) for r in rows)
    assert longest_pair < 256  # below the model's context, which the plan takes without --data

    args = ["plan", "--profile", "smoke", "--base-model", str(llama), "--json"]
    assert main([*args, "--data", str(folder)]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["seq_len"], plan["prompt_len"]) == (longest_pair, longest_prompt)
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["seq_len"] == 256


def test_plan_data_needs_the_base_model_it_is_for(data_and_model, capsys):
    folder, _, _ = data_and_model
    assert main(["plan", "--profile", "smoke", "--data", str(folder)]) == 2
    assert "--base-model" in capsys.readouterr().err


def test_plan_data_with_a_model_without_its_tokenizer_names_it_in_one_line(data_and_model, capsys):
    # given a model folder whose tokenizer files are gone (a traceback from transformers)
    folder, llama, _ = data_and_model
    for name in llama.iterdir():
        if name.name.startswith(("tokenizer", "special_tokens")):
            name.unlink()
    # when the plan reads the data in its tokens
    argv = ["plan", "--profile", "smoke", "--base-model", str(llama), "--data", str(folder)]
    # then it is refused as `run` refuses that model: the folder and the field, no traceback
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{llama} field 'tokenizer': no tokenizer files (tokenizer.json, " in err
    assert "Traceback" not in err


def test_a_process_of_n_holds_its_shard_of_each_batch_and_every_weight():
    assert [per_process(8, 2), per_process(7, 2), per_process(1, 2), per_process(5, 1)] == [
        4,
        4,
        1,
        5,
    ]
    one = make_plan(PipelineParams(profile="smoke"), 64, 16)
    two = make_plan(PipelineParams(profile="smoke", processes=2), 64, 16)
    sft_batch = PipelineParams(profile="smoke").stage("sft").batch_size
    for a, b in zip(one["stages"], two["stages"], strict=True):
        # weights, gradients and optimizer state are whole in every process (DDP)
        assert (a.weights, a.gradients, a.optimizer) == (b.weights, b.gradients, b.optimizer)
    sft_one, sft_two = one["stages"][0], two["stages"][0]
    # activations are linear in the rows of a batch: a shard of ceil(batch / 2) rows
    assert sft_two.activations * sft_batch == sft_one.activations * per_process(sft_batch, 2)
    assert two["processes"] == 2
