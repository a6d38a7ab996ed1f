"""`instructflow plan` on a model the reward model cannot be built on: one line, exit 2."""

from transformers import GraniteConfig

from instructflow.flows.cli import main


def test_plan_of_a_model_without_a_reward_head_is_one_line(tmp_path, capsys):
    # given a causal LM whose type has no sequence-classification class (only its config)
    model = tmp_path / "granite"
    config = GraniteConfig(
        hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=1
    )
    config.save_pretrained(model)
    # when its memory plan is asked for
    status = main(["plan", "--base-model", str(model)])
    # then the command says why in one line, as for any bad setting, and no traceback
    err = capsys.readouterr().err
    assert status == 2
    assert "'granite' has no sequence-classification class" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_plan_of_a_broken_or_empty_model_folder_is_refused_as_run_refuses_it(tmp_path, capsys):
    # given a model folder whose config.json was cut short, and an empty one
    broken, empty = tmp_path / "broken", tmp_path / "empty"
    broken.mkdir(), empty.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama", "hidden_')
    for folder, field in ((broken, "<line>"), (empty, "config.json")):
        # when its memory plan is asked for
        status = main(["plan", "--base-model", str(folder)])
        # then the problem is named by file and field, exit 2, no traceback
        err = capsys.readouterr().err
        assert status == 2 and "Traceback" not in err
        assert f"field '{field}'" in err and str(folder) in err


def test_plan_with_lora_targets_the_model_lacks_names_the_setting(tmp_path, capsys):
    # given a Llama (its config is all a plan reads) and GPT-2's module name as SFT's target
    from transformers import LlamaConfig

    model = tmp_path / "llama"
    LlamaConfig(
        hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=1
    ).save_pretrained(model)
    params = tmp_path / "p.json"
    params.write_text('{"params": {"sft": {"lora": {"target_modules": ["c_attn"]}}}}')
    # when its memory plan is asked for
    status = main(["plan", "--base-model", str(model), "--params", str(params)])
    # then it is refused as `run` refuses it (it was peft's NoMatchingPeftModuleError traceback)
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    assert "'sft.lora.target_modules': 'c_attn' names no module of this llama model" in err
