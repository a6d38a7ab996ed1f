"""Where a run registers: the embedded world's profiles and each dataset apart."""

from instructflow.tasks.registry_config import RegistryConfig


def test_smoke_runs_register_apart_from_real_runs():
    assert RegistryConfig().names("tiny") == ("instructflow-policy", "instructflow-reward-model")
    assert RegistryConfig().names("smoke") == (
        "instructflow-policy-smoke",
        "instructflow-reward-model-smoke",
    )


def test_a_dataset_run_registers_under_its_folder_name(tmp_path):
    # given a dataset folder whose name has a space and a colon
    data = tmp_path / "team prefs:v2"
    data.mkdir()
    # then its runs register under that name, made safe, and apart from the embedded world's
    assert RegistryConfig().names("small", str(data)) == (
        "instructflow-policy-team-prefs-v2",
        "instructflow-reward-model-team-prefs-v2",
    )
    assert (
        RegistryConfig().names("smoke", str(data))[0] == "instructflow-policy-team-prefs-v2-smoke"
    )
    # and a relative path names the folder, not '.'
    assert RegistryConfig().names("small", ".")[0] == f"instructflow-policy-{tmp_path.cwd().name}"


def test_names_given_in_the_parameters_win():
    cfg = RegistryConfig(model_name="ours", reward_model_name="our-rm")
    assert cfg.names("smoke", "/data/hh") == ("ours", "our-rm")


def test_a_dataset_folder_name_mlflow_would_refuse_still_registers_apart(tmp_path):
    # MLflow refuses . / : % " ' in a logged model's name: a folder 'prefs-v2.1' failed its
    # run at the registry, the last stage, after every training stage had run
    from mlflow.utils.validation import _validate_logged_model_name

    for folder, suffix in (
        ("my prefs (v2.1)", "my-prefs-v2-1"),
        ("hh_rlhf.v1", "hh_rlhf-v1"),
        ("'quoted' 100%", "quoted-100"),
    ):
        policy, rm = RegistryConfig().names("smoke", str(tmp_path / folder))
        assert policy == f"instructflow-policy-{suffix}-smoke"
        _validate_logged_model_name(policy)
        _validate_logged_model_name(rm)
    # a name in another script keeps a suffix of its own: never the embedded world's models
    names = RegistryConfig().names("tiny", str(tmp_path / "数据"))
    assert names[0].startswith("instructflow-policy-data-") and names == RegistryConfig().names(
        "tiny", str(tmp_path / "数据")
    )
    assert RegistryConfig().names("tiny", str(tmp_path / "资料"))[0] != names[0]


def test_a_registered_name_mlflow_would_refuse_is_refused_with_the_settings():
    import pytest
    from pydantic import ValidationError

    for bad in ("my.policy", "team/policy", "a:b"):
        with pytest.raises(ValidationError, match="String should match pattern"):
            RegistryConfig(model_name=bad)
        with pytest.raises(ValidationError, match="String should match pattern"):
            RegistryConfig(reward_model_name=bad)
    assert RegistryConfig(model_name="our-policy_v2").names("tiny")[0] == "our-policy_v2"
