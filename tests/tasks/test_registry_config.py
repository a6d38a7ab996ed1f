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
