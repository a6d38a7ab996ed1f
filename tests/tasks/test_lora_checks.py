"""LoRA target names that name no module of the model are refused before any stage trains.

peft failed mid-stage (two tracebacks) when no listed name matched, and
adapted fewer modules than asked, silently, when only some did.
"""

import json

from instructflow.flows.params import PipelineParams
from instructflow.models.lora import LoraOptions, unmatched_targets
from instructflow.tasks.lora_checks import lora_target_problems, model_config


def test_a_name_matches_a_module_path_or_its_dotted_end():
    names = ["transformer.h.0.attn", "transformer.h.0.attn.c_attn", "lm_head"]
    assert unmatched_targets(names, ["c_attn", "h.0.attn.c_attn", "lm_head"]) == []
    # "attn.c" is not a whole part of the path; "_attn" is not a dotted end
    assert unmatched_targets(names, ["attn.c", "_attn", "q_proj"]) == ["attn.c", "_attn", "q_proj"]


def test_a_lone_name_is_a_list_of_one_and_all_linear_stays_as_is():
    assert LoraOptions(target_modules="c_attn").target_modules == ["c_attn"]
    assert LoraOptions(target_modules="all-linear").target_modules == "all-linear"


def test_each_unmatched_name_of_each_stage_is_one_problem_naming_the_setting():
    params = PipelineParams(
        profile="smoke",
        sft={"lora": {"target_modules": ["c_attn", "q_proj"]}},  # one of two matches
        reward_model={"lora": {"target_modules": "nonexistent_proj"}},
        ppo={"lora": {"target_modules": "all-linear"}},
    )
    problems = lora_target_problems(params, model_config(None))  # the embedded GPT-2
    assert [(p.field, p.message.split(" names")[0]) for p in problems] == [
        ("sft.lora.target_modules", "'q_proj'"),
        ("reward_model.lora.target_modules", "'nonexistent_proj'"),
    ]
    assert "its linear layers: c_attn, c_fc, c_proj" in problems[0].message


def test_matching_names_and_peft_defaults_pass(tmp_path):
    from tests.tiny_models import tiny_llama

    llama = tiny_llama(tmp_path / "llama", ["some text to train a tokenizer on"])
    params = PipelineParams(
        sft={"lora": {"target_modules": ["q_proj", "v_proj"]}},
        reward_model={"lora": {}},  # peft's default for the architecture
        base_model=str(llama),
    )
    assert lora_target_problems(params, model_config(str(llama))) == []
    params = params.model_copy(
        update={
            "ppo": params.ppo.model_copy(update={"lora": LoraOptions(target_modules=["qproj"])})
        }
    )
    assert [p.field for p in lora_target_problems(params, model_config(str(llama)))] == [
        "ppo.lora.target_modules"
    ]


def test_the_command_line_refuses_a_bad_target_before_any_stage(
    tmp_path, monkeypatch, capsys, make_project
):
    from instructflow.flows.cli import main

    root = make_project()
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    bad = tmp_path / "lora.json"
    bad.write_text(json.dumps({"sft": {"lora": {"target_modules": ["c_attn", "c_atn"]}}}))
    code = main(["run", "--profile", "smoke", "--params", str(bad)])
    assert code == 2
    err = capsys.readouterr().err
    assert "sft.lora.target_modules" in err and "'c_atn' names no module" in err
    assert "Traceback" not in err
    assert not (root / "runs" / "sft").exists()


def test_a_policy_adapter_on_an_embedding_tied_to_the_output_layer_is_refused():
    from transformers import GPT2Config

    # given LoRA on GPT-2's output layer (SFT) and its input embedding (PPO), which GPT-2
    # ties to one weight, and on the RM's input embedding (its network has no output layer)
    params = PipelineParams(
        profile="smoke",
        sft={"lora": {"target_modules": ["c_attn", "lm_head"]}},
        ppo={"lora": {"target_modules": "wte"}},
        reward_model={"lora": {"target_modules": "wte"}},
    )
    # when they are checked before any stage
    problems = lora_target_problems(params, model_config(None))
    # then each policy stage's tied name is one problem saying why (merging it into the
    # checkpoint changed both ends, so the registered model was not the one trained)
    assert [(p.field, p.message.split(",")[0]) for p in problems] == [
        ("sft.lora.target_modules", "'lm_head' adapts lm_head"),
        ("ppo.lora.target_modules", "'wte' adapts transformer.wte"),
    ]
    assert "tie_word_embeddings" in problems[0].message
    # and a model whose output layer has its own weight may adapt it
    untied = GPT2Config(n_layer=1, n_head=2, n_embd=8, tie_word_embeddings=False)
    assert lora_target_problems(params, untied) == []
