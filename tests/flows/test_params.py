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


def test_a_setting_sent_at_the_default_a_profile_resizes_is_warned_about_not_dropped_silently(
    tmp_path, capsys
):
    import argparse
    import json

    from instructflow.flows.cli_run import _run_params

    # given a smoke run whose params file asks for 150 PPO iterations (the field's default,
    # which smoke resizes to 4) and for 7 SFT epochs (not a default)
    file = tmp_path / "p.json"
    file.write_text(
        json.dumps({"profile": "smoke", "ppo": {"iterations": 150}, "sft": {"epochs": 7}})
    )
    options = ("profile", "seed", "base_model", "base_model_revision", "data", "threads")
    args = argparse.Namespace(
        params=str(file), processes=None, allow_data_mismatch=False, **dict.fromkeys(options)
    )
    # when the command line reads it
    params = _run_params(args)
    # then the run uses smoke's 4 iterations, and says so rather than dropping the 150 unsaid
    assert params.stage("ppo").iterations == 4 and params.stage("sft").epochs == 7
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("instructflow: warning: ppo.iterations = 150 is ignored")
    assert "profile smoke resizes, so the run uses ppo.iterations = 4" in line
    # and a file with every setting (`instructflow params --example`, a run's settings dumped)
    # is a smoke run without a warning: its values are every field's, not picked by hand
    from instructflow.flows.params_io import example

    file.write_text(json.dumps(example()))
    args.profile = "smoke"  # `instructflow run --profile smoke --params p.json`, as README has it
    assert _run_params(args).stage("ppo").iterations == 4
    assert capsys.readouterr().err == ""
