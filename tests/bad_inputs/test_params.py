"""Bad run settings: one line per problem naming the field and what it allows."""

import json

import pytest

from instructflow.flows.params import PipelineParams
from instructflow.flows.params_io import ParamsError, build_params, read_params_file
from tests.bad_inputs.conftest import assert_names, refusal

CASES = [
    ("unknown-top", {"bogus": 1}, ["unknown field 'bogus'", "allowed fields here: profile, seed"]),
    ("unknown-nested", {"ppo": {"lr_rate": 1e-4}}, ["unknown field 'ppo.lr_rate'", "kl_beta"]),
    ("wrong-type", {"seed": "abc"}, ['seed = "abc"', "an integer >= 0"]),
    ("out-of-range", {"comparisons": {"k": 12}}, ["comparisons.k = 12", ">= 4 and <= 9"]),
    ("negative-lr", {"sft": {"lr": -1}}, ["sft.lr = -1", "a number > 0"]),
    ("bad-choice", {"profile": "huge"}, ['profile = "huge"', 'one of "smoke", "tiny", "small"']),
    ("not-an-object", {"ppo": 5}, ["ppo = 5", "an object with fields iterations"]),
    # pydantic read `true` as 1 and ran one PPO iteration
    ("bool-for-an-integer", {"ppo": {"iterations": True}}, ["ppo.iterations = true", "integer"]),
    ("bool-for-a-number", {"sft": {"lr": False}}, ["sft.lr = false", "a number > 0"]),
    # passed `> 0`, then PPO-ptx stopped on a NaN loss after every other stage had trained
    ("infinite-lr", {"ppo": {"lr": float("inf")}}, ["ppo.lr = Infinity", "a number > 0"]),
    ("infinite-optional", {"ppo": {"kl_budget": float("inf")}}, ["ppo.kl_budget = Infinity"]),
    ("bool-in-an-optional-object", {"sft": {"lora": {"r": True}}}, ["sft.lora.r = true"]),
    # a template's quoted placeholder: pydantic read the text as the number (or bool)
    ("quoted-lr", {"ppo": {"lr": "1e-4"}}, ['ppo.lr = "1e-4"', "write 1e-4 without them"]),
    ("quoted-epochs", {"sft": {"epochs": "3"}}, ['sft.epochs = "3"', "an integer >= 1"]),
    ("quoted-optional", {"threads": "2"}, ['threads = "2"', "write 2 without them"]),
    ("quoted-bool", {"gate": {"auto_promote": "false"}}, ['auto_promote = "false"', "true or"]),
    ("fraction-above-one", {"ppo": {"gae_lambda": 1.5}}, ["ppo.gae_lambda = 1.5", "<= 1"]),
    ("no-processes", {"processes": 0}, ["processes = 0", "an integer >= 1"]),
    ("judge-batch", {"judge": {"batch_size": 0}}, ["judge.batch_size = 0", "an integer >= 1"]),
    ("judge-lr", {"judge": {"lr": -1}}, ["judge.lr = -1", "a number > 0"]),
    (
        "registered-name-mlflow-refuses",  # it failed the run at its last stage, the registry
        {"registry": {"model_name": "team.policy"}},
        ['registry.model_name = "team.policy"', "a string matching ^[^/:.%\"']+$"],
    ),
    # a field of an optional nested object (lora is an object or null) said only "see
    # `instructflow params --schema`"
    ("lora-rank-zero", {"sft": {"lora": {"r": 0}}}, ["sft.lora.r = 0", "an integer >= 1"]),
    (
        "lora-dropout-one",
        {"ppo": {"lora": {"dropout": 1.0}}},
        ["ppo.lora.dropout = 1.0", "a number >= 0.0 and < 1.0"],
    ),
    (
        # an empty list passed every check and failed PPO with peft's traceback after SFT
        # and the reward model had trained
        "lora-no-targets",
        {"ppo": {"lora": {"target_modules": []}}},
        ["ppo.lora.target_modules = []", "a list of at least 1 string", '"all-linear"', "null"],
    ),
    (
        # said "ppo = {...} is not allowed; expected an object with fields iterations,
        # rollout_batch, ...", naming no reason
        "minibatch-above-rollout",
        {"ppo": {"rollout_batch": 2}},
        ["ppo.minibatch_size = 32 is more than ppo.rollout_batch = 2 (profile tiny)"],
    ),
    (
        # passed, then failed the PPO stage after SFT and the reward model had trained
        "minibatch-above-the-profile-s-rollout",
        {"profile": "smoke", "ppo": {"minibatch_size": 24}},
        ["ppo.minibatch_size = 24 is more than ppo.rollout_batch = 16 (profile smoke)"],
    ),
    (
        "more-processes-than-rollouts",
        {"profile": "smoke", "processes": 17},
        ["processes = 17 is more than ppo.rollout_batch = 16 (profile smoke)"],
    ),
]


@pytest.mark.parametrize(("fields", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_params_give_one_line_per_field_with_what_is_allowed(fields, expected):
    with pytest.raises(ParamsError) as caught:
        build_params(fields)
    text = str(caught.value)
    assert len(text.splitlines()) == 1, text
    assert text.startswith("params: ")
    for words in expected:
        assert words in text


def test_a_bool_for_an_integer_with_a_bound_is_named_once():
    # given `true` for processes (>= 1 after pydantic reads it as 1) and for seed (>= 0)
    # then each field gets one line, not one from each check
    with pytest.raises(ParamsError) as caught:
        build_params({"processes": True, "seed": True, "ppo": {"rollout_batch": True}})
    lines = str(caught.value).splitlines()
    assert len(lines) == len(set(lines)) >= 3, lines


def test_a_bool_where_a_bool_belongs_and_finite_numbers_still_pass():
    params = build_params({"ppo": {"adaptive_kl": True, "lr": 1e-5}, "seed": 3})
    assert (params.ppo.adaptive_kl, params.ppo.lr, params.seed) == (True, 1e-5, 3)


def test_text_where_text_belongs_still_passes():
    # given text for fields that take text, beside numbers written as numbers
    params = build_params({"registry": {"model_name": "team-policy"}, "sft": {"epochs": 3}})
    # then nothing is refused: only text for a number or a bool is
    assert (params.registry.model_name, params.sft.epochs) == ("team-policy", 3)


def test_a_quoted_number_in_a_params_file_is_refused_naming_the_file(tmp_path):
    # given a params file filled in from a template that quoted its numbers
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"params": {"ppo": {"lr": "1e-4"}, "sft": {"epochs": "3"}}}))
    # then reading it names the file and each field on a line of its own
    with pytest.raises(ParamsError) as caught:
        read_params_file(path)
    lines = str(caught.value).splitlines()
    assert lines == [
        f'{path}: ppo.lr = "1e-4" is not allowed; expected a number > 0'
        " (the quotes make it text: write 1e-4 without them)",
        f'{path}: sft.epochs = "3" is not allowed; expected an integer >= 1'
        " (the quotes make it text: write 3 without them)",
    ]
    # and the same text given on the command line is named as such
    with pytest.raises(ParamsError, match=r'^--params text: seed = "3" is not allowed'):
        read_params_file('{"seed": "3"}')


def test_two_bad_fields_give_two_lines():
    with pytest.raises(ParamsError) as caught:
        build_params({"seed": -1, "ppo": {"lr": 0}})
    assert len(str(caught.value).splitlines()) == 2


def test_both_ppo_sizes_too_big_for_a_rollout_batch_give_two_lines():
    # given a smoke run with more processes and a bigger minibatch than its rollout batch
    rollout = PipelineParams(profile="smoke").stage("ppo").rollout_batch
    fields = {"profile": "smoke", "processes": rollout + 1, "ppo": {"minibatch_size": rollout + 8}}
    # then each is named on a line of its own, not only the first one checked
    with pytest.raises(ParamsError) as caught:
        build_params(fields)
    lines = str(caught.value).splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"params: processes = {rollout + 1} is more than")
    assert lines[1].startswith(f"params: ppo.minibatch_size = {rollout + 8} is more than")


def test_prefect_validates_a_form_run_with_the_same_lines():
    # given the parameters a deployment run (the UI form) would send
    from prefect.exceptions import ParameterTypeError

    from instructflow.flows.pipeline import rlhf_pipeline

    with pytest.raises(ParameterTypeError) as caught:
        rlhf_pipeline.validate_parameters({"params": {"ppo": {"lr": -1}}})
    # then Prefect's refusal carries the same one-line explanation
    assert "ppo.lr = -1 is not allowed; expected a number > 0" in str(caught.value)
    assert "Traceback" not in str(caught.value)
    # and a quoted number from the form or `prefect deployment run --params` is refused too
    with pytest.raises(ParameterTypeError, match=r'ppo.lr = "1e-4" is not allowed'):
        rlhf_pipeline.validate_parameters({"params": {"ppo": {"lr": "1e-4"}}})


def test_a_params_file_that_is_not_json_names_line_and_column(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{\n  "seed": 1,\n  "profile": smoke\n}\n')
    with pytest.raises(ParamsError, match=r"p.json line 3 column 14: not valid JSON"):
        read_params_file(path)


def test_a_yaml_params_file_is_refused_saying_params_files_are_json(tmp_path):
    # given settings written as YAML, as prefect.yaml writes a deployment's parameters
    path = tmp_path / "p.yaml"
    path.write_text("params:\n  profile: smoke\n  ppo:\n    lr: 1e-4\n")
    # then the refusal says the file must be JSON and how to get one (it said "line 1
    # column 1: not valid JSON (Expecting value)")
    with pytest.raises(ParamsError) as caught:
        read_params_file(path)
    assert str(caught.value) == (
        f"{path}: a params file is JSON, not YAML (`instructflow params --example > p.json`"
        " writes one to edit)"
    )


def test_a_params_file_may_use_the_deployment_form_shape(tmp_path):
    # given the same settings as the form sends them and bare, with comments
    form, bare = tmp_path / "form.json", tmp_path / "bare.json"
    form.write_text(
        json.dumps({"_comment": "x", "params": {"seed": 3, "ppo": {"_lr": "doc", "lr": 0.5}}})
    )
    bare.write_text(json.dumps({"seed": 3, "ppo": {"lr": 0.5}}))
    # then both read the same
    assert read_params_file(form) == read_params_file(bare) == {"seed": 3, "ppo": {"lr": 0.5}}


def test_the_example_reads_back_as_the_defaults(tmp_path):
    from instructflow.flows.params import PipelineParams
    from instructflow.flows.params_io import example

    path = tmp_path / "p.json"
    path.write_text(json.dumps(example()))
    assert build_params(read_params_file(path)) == PipelineParams()
    # and every field carries its comment
    params = example()["params"]
    assert all(f"_{name}" in params for name in PipelineParams.model_fields)


def test_the_example_says_an_optional_object_takes_its_fields():
    from instructflow.flows.params_io import example

    # LoRA is null or an object: the comment said "Allowed: null" only
    lora = example()["params"]["sft"]["_lora"]
    assert lora.endswith(
        "Allowed: an object with fields r, alpha, dropout, target_modules or null."
    )


def test_a_block_longer_than_the_context_is_refused_before_training(smoke_dir, params):
    problems = refusal(params(base={"block_size": 512, "n_positions": 256}), smoke_dir)
    assert_names(problems, "params", 0, "base.block_size", "n_positions")


def test_heads_that_do_not_divide_the_width_are_refused(smoke_dir, params):
    problems = refusal(params(base={"n_head": 3, "n_embd": 64}), smoke_dir)
    assert_names(problems, "params", 0, "base.n_head", "multiple")


def test_params_may_be_given_as_json_text_rather_than_a_file():
    # given the settings typed on the command line (`run --params '{"ppo": {"lr": 3e-5}}'`),
    # which was refused as "no such params file"
    # then they read as the same settings in a file do, in either shape
    assert read_params_file('{"ppo": {"lr": 3e-5}}') == {"ppo": {"lr": 3e-5}}
    assert read_params_file(' {"params": {"seed": 2}}') == {"seed": 2}
    # and bad JSON text is named as the --params text, with where it breaks
    with pytest.raises(ParamsError, match=r"--params text line 1 column 10: not valid JSON"):
        read_params_file('{"seed": two}')
    # while a missing file is still a missing file
    with pytest.raises(ParamsError, match=r"nothere.json: no such params file"):
        read_params_file("nothere.json")


def test_a_rollout_batch_the_profile_s_minibatch_fits_in_is_accepted():
    # smoke's own rollout_batch was refused against tiny's minibatch_size (32)
    params = build_params({"profile": "smoke", "ppo": {"rollout_batch": 16}})
    assert (params.stage("ppo").rollout_batch, params.stage("ppo").minibatch_size) == (16, 8)


def test_a_params_file_that_cannot_be_read_as_text_is_one_line(tmp_path):
    # given a params file saved as UTF-16 (Notepad's "Unicode"), and a folder named as one
    utf16 = tmp_path / "p.json"
    utf16.write_text('{"seed": 1}', encoding="utf-16")
    # then each is one line naming the file (they were UnicodeDecodeError and
    # IsADirectoryError tracebacks)
    with pytest.raises(ParamsError, match=r"p.json: not UTF-8 text \(byte 0xff at offset 0\)"):
        read_params_file(utf16)
    with pytest.raises(ParamsError, match=r": cannot read the params file \(Is a directory\)"):
        read_params_file(tmp_path)


@pytest.mark.parametrize("text", ["[1, 2]", '"x"', "3"])
def test_json_text_other_than_an_object_is_named_so(text):
    # it was refused as "no such params file"
    with pytest.raises(ParamsError, match=r"must hold a JSON object of PipelineParams fields"):
        read_params_file(text)
