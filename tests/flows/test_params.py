"""Profile sizes versus what the user set, as the Prefect UI's run form sends it."""

import json

from instructflow.flows.params import PROFILE_OVERRIDES, PipelineParams
from instructflow.tasks.base_model import BaseModelConfig


def test_profile_sizes_apply_to_fields_not_sent():
    # given a smoke run with no stage settings
    params = PipelineParams(profile="smoke")
    # then the base model gets smoke's sizes
    base = params.stage("base")
    assert base.n_layer == PROFILE_OVERRIDES["smoke"]["base"]["n_layer"] == 2
    assert base.n_embd == 64


def test_profile_sizes_apply_to_fields_sent_at_their_default():
    # given a smoke run as a form sends it: every base field, each at its default
    every_default = BaseModelConfig().model_dump()
    params = PipelineParams.model_validate({"profile": "smoke", "base": every_default})
    assert "n_layer" in params.base.model_fields_set
    # then the fields still take smoke's sizes
    assert params.stage("base").n_layer == 2
    assert params.stage("base").steps == PROFILE_OVERRIDES["smoke"]["base"]["steps"]


def test_a_value_the_user_changed_wins_over_the_profile():
    # given a smoke run whose user asked for three layers
    params = PipelineParams.model_validate({"profile": "smoke", "base": {"n_layer": 3}})
    # then three it is, and the other sizes are still smoke's
    assert params.stage("base").n_layer == 3
    assert params.stage("base").n_embd == 64


def test_tiny_takes_the_stage_defaults():
    assert PipelineParams(profile="tiny").stage("base") == BaseModelConfig()


def test_the_settings_in_force_are_flat_with_the_profiles_sizes_and_the_users_values():
    settings = PipelineParams(profile="smoke", ppo={"lr": 3e-5}).settings_in_force()
    assert settings["profile"] == "smoke" and settings["seed"] == 0
    assert settings["base.n_layer"] == 2  # smoke's size, not the tiny default
    assert settings["ppo.lr"] == 3e-5  # the user's
    assert settings["sft.lora"] is None and settings["registry.model_name"] is None
    tiny = PipelineParams().settings_in_force()
    assert tiny["base.n_layer"] == BaseModelConfig().n_layer and set(tiny) == set(settings)


def test_the_settings_table_says_who_set_each_value():
    from instructflow.flows.params_io import settings_table

    params = PipelineParams(profile="smoke", seed=1, ppo={"lr": 3e-5}, sft={"lora": {"r": 8}})
    rows = settings_table(params)
    by = {row["setting"]: (row["value"], row["set by"]) for row in rows}
    assert by["profile"] == ('"smoke"', "you") and by["seed"] == ("1", "you")
    assert by["ppo.lr"] == ("3e-05", "you")
    assert by["sft.lora.r"] == ("8", "you")  # a setting the defaults do not have (lora: null)
    assert by["base.n_layer"] == ("2", "profile smoke")  # the form shows tiny's 4
    assert by["ppo.gamma"][1] == "default"
    # yours first, then the profile's, then the defaults
    order = [row["set by"] for row in rows]
    assert order == sorted(order, key=["you", "profile smoke", "default"].index)


def test_every_parameter_of_the_flow_form_is_described():
    # The Prefect UI's run and schedule forms show what Prefect reads from the flow's
    # docstring: sweep_run_id showed with no description and invited a value.
    from prefect.utilities.callables import parameter_schema

    from instructflow.flows.pipeline import rlhf_pipeline

    properties = parameter_schema(rlhf_pipeline.fn).properties
    assert set(properties) == {"params", "sweep_run_id"}
    assert all(p.get("description") for p in properties.values())
    assert properties["sweep_run_id"]["description"].startswith("Leave empty.")


def test_the_settings_you_set_are_those_off_the_profiles_defaults():
    from instructflow.flows.params_io import settings_you_set

    # given a smoke run with two PPO settings and LoRA on SFT
    params = PipelineParams(
        profile="smoke", seed=1, ppo={"lr": 3e-4, "min_gain": -1.0}, sft={"lora": {"r": 8}}
    )
    # then the report gets those, as values (profile and seed have their own fields)
    you = settings_you_set(params)
    assert {"ppo.lr": 3e-4, "ppo.min_gain": -1.0, "sft.lora.r": 8}.items() <= you.items()
    assert "profile" not in you and "seed" not in you
    assert "base.n_layer" not in you  # the profile's size, not yours
    # and a run left at its profile's defaults set none
    assert settings_you_set(PipelineParams(profile="smoke")) == {}


def test_settings_left_empty_are_recorded_as_the_run_decided_them(monkeypatch):
    import mlflow
    import prefect.artifacts

    from instructflow.flows import params_io

    logged, tables = {}, {}
    monkeypatch.setattr(mlflow, "log_params", logged.update)
    monkeypatch.setattr(
        prefect.artifacts,
        "create_table_artifact",
        lambda table, key, description: tables.update({key: table}),
    )
    # given a smoke run and a tiny run left at their defaults, on 2 threads
    for profile in ("smoke", "tiny"):
        logged.clear()
        params_io.record_settings(PipelineParams(profile=profile), threads=2)
        rows = {row["setting"]: row for row in tables["settings-in-force"]}
        # then MLflow's params and the Prefect table ("every setting this run uses") show
        # what the run used where the form left a setting empty, not null: threads pinned,
        # whether stages ran side by side (not on smoke), the registered models
        suffix = "-smoke" if profile == "smoke" else ""
        decided = {
            "threads": 2,
            "side_by_side": profile != "smoke",
            "base_model": "embedded",
            "registry.model_name": f"instructflow-policy{suffix}",
            "registry.reward_model_name": f"instructflow-reward-model{suffix}",
        }
        for name, value in decided.items():
            assert logged[name] == value, (profile, name)
            assert rows[name]["value"] == json.dumps(value), (profile, name)
            assert rows[name]["set by"] == "default"  # and who set it is unchanged
    # and a value the user gave is the one recorded
    params_io.record_settings(PipelineParams(profile="tiny", side_by_side=False), threads=2)
    assert logged["side_by_side"] is False and logged["threads"] == 2
    by = {row["setting"]: row["set by"] for row in tables["settings-in-force"]}
    assert by["side_by_side"] == "you"
    # and on one thread a tiny run's stages run one after the other: recorded so
    params_io.record_settings(PipelineParams(profile="tiny"), threads=1)
    assert logged["side_by_side"] is False and logged["threads"] == 1


def test_a_stage_setting_sent_at_its_default_wins_over_the_profile(tmp_path, capsys):
    import argparse
    import json

    from instructflow.flows.cli_run import _run_params
    from instructflow.tasks.ppo_config import PPOStageConfig

    # given a smoke run whose params file asks for PPO's default iterations (tiny-sized: the
    # smoke profile resizes the field) and for more SFT epochs than the default
    tiny_iterations = PPOStageConfig().iterations
    assert PROFILE_OVERRIDES["smoke"]["ppo"]["iterations"] != tiny_iterations
    epochs = PipelineParams().sft.epochs + 4
    file = tmp_path / "p.json"
    file.write_text(
        json.dumps(
            {"profile": "smoke", "ppo": {"iterations": tiny_iterations}, "sft": {"epochs": epochs}}
        )
    )
    options = ("profile", "seed", "base_model", "base_model_revision", "data", "threads")
    args = argparse.Namespace(
        params=str(file), processes=None, allow_data_mismatch=False, **dict.fromkeys(options)
    )
    # when the command line reads it
    params = _run_params(args)
    # then the run uses both values asked for (the default one was dropped for smoke's),
    # the fields not sent keep smoke's sizes, and nothing is warned about
    ppo = params.stage("ppo")
    assert ppo.iterations == tiny_iterations and params.stage("sft").epochs == epochs
    assert ppo.rollout_batch == PROFILE_OVERRIDES["smoke"]["ppo"]["rollout_batch"]
    assert capsys.readouterr().err == ""
    # and the report's settings name it as the user's
    from instructflow.flows.params_io import settings_you_set

    assert settings_you_set(params)["ppo.iterations"] == tiny_iterations


def test_a_dumped_params_file_runs_as_the_profile_without_it(tmp_path, capsys):
    import argparse
    import json

    from instructflow.flows.cli_run import _run_params
    from instructflow.flows.params_io import example

    # given every setting at its default, as `instructflow params --example` writes it
    file = tmp_path / "p.json"
    file.write_text(json.dumps(example()))
    options = ("seed", "base_model", "base_model_revision", "data", "threads")
    args = argparse.Namespace(
        params=str(file), processes=None, allow_data_mismatch=False, **dict.fromkeys(options)
    )
    for profile in PROFILE_OVERRIDES:
        # when a run on each profile reads it (`run --profile smoke --params p.json`)
        args.profile = profile
        from_file = _run_params(args)
        # then every stage is what that profile gives without the file (the stage configs
        # are what the stages' cache keys hold), and so is every setting in force
        plain = PipelineParams(profile=profile)
        for name in PROFILE_OVERRIDES["smoke"]:
            assert from_file.stage(name) == plain.stage(name), (profile, name)
        assert from_file.settings_in_force() == plain.settings_in_force(), profile
    assert capsys.readouterr().err == ""


def test_a_field_sent_at_its_default_in_part_of_a_stage_is_kept_under_a_profile():
    # given a smoke run that asks for the base model's default (tiny) depth, and nothing else
    tiny = BaseModelConfig()
    params = PipelineParams.model_validate({"profile": "smoke", "base": {"n_layer": tiny.n_layer}})
    # then it gets that depth, and smoke's sizes for every field it did not send
    base = params.stage("base")
    assert base.n_layer == tiny.n_layer != PROFILE_OVERRIDES["smoke"]["base"]["n_layer"]
    assert base.n_embd == PROFILE_OVERRIDES["smoke"]["base"]["n_embd"]


def test_a_runs_prefect_parameters_show_what_was_set_not_tinys_sizes():
    # Prefect stores a flow run's parameters as FastAPI's encoder dumps them (its Parameters tab)
    from fastapi.encoders import jsonable_encoder
    from prefect.utilities.callables import parameter_schema

    from instructflow.flows.pipeline import rlhf_pipeline

    # given a smoke run with one PPO setting of the user's
    smoke = PipelineParams(profile="smoke", ppo={"lr": 2e-5})
    # then its dump holds the profile, the seed and that setting, not tiny's stage sizes
    assert jsonable_encoder(smoke) == {"profile": "smoke", "seed": 0, "ppo": {"lr": 2e-5}}
    # and a stage sent whole (a dumped params file) shows only the fields off their defaults
    whole = BaseModelConfig().model_dump() | {"steps": 30}
    assert jsonable_encoder(PipelineParams(profile="smoke", base=whole))["base"] == {"steps": 30}
    # and the dump runs as the original: the same settings in force
    again = PipelineParams.model_validate(jsonable_encoder(smoke))
    assert again.settings_in_force() == smoke.settings_in_force()
    # and the flow's default (the run form's values) is still every default
    default = parameter_schema(rlhf_pipeline.fn).properties["params"]["default"]
    assert default == PipelineParams().model_dump(mode="json") and default["base"]["n_layer"] == 4
