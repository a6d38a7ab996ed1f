"""Registry commands name what is there when what they were asked for is not (one line, exit 2)."""

import pytest
from mlflow import MlflowClient

from instructflow.flows.cli import main
from instructflow.tasks.registry_config import RegistryLookupError
from instructflow.tasks.registry_lookup import evaluable_version, find_version
from tests.conftest import use_project


@pytest.fixture
def client(tmp_path, monkeypatch) -> MlflowClient:
    """A registry holding instructflow-policy-smoke v1 (champion) and v2, v2 from a dataset run."""
    client = MlflowClient(tracking_uri=use_project(monkeypatch, tmp_path))
    client.create_registered_model("instructflow-policy-smoke")
    for tags in ({}, {"data_dir": "/data/prefs"}):
        client.create_model_version("instructflow-policy-smoke", str(tmp_path), tags=tags)
    client.set_registered_model_alias("instructflow-policy-smoke", "champion", "1")
    return client


def test_a_missing_model_version_or_alias_is_named_with_what_is_there(client):
    assert find_version(client, "instructflow-policy-smoke", "champion").version in (1, "1")
    with pytest.raises(RegistryLookupError) as e:
        find_version(client, "instructflow-policy", "champion")
    assert str(e.value) == (
        "no registered model 'instructflow-policy' (registered: instructflow-policy-smoke)"
    )
    with pytest.raises(RegistryLookupError) as e:
        find_version(client, "instructflow-policy-smoke", "7")
    assert str(e.value) == (
        "instructflow-policy-smoke has no version 7 (versions: 1, 2; aliases: champion -> v1)"
    )
    with pytest.raises(RegistryLookupError, match="has no alias 'challenger' \\(versions: 1, 2"):
        find_version(client, "instructflow-policy-smoke", "challenger")


def test_evaluate_refuses_a_policy_trained_on_a_dataset_saying_where_its_evaluation_is(client):
    with pytest.raises(RegistryLookupError) as e:
        evaluable_version(client, "instructflow-policy-smoke", "2")
    assert str(e.value).startswith(  # named once by its number, not "v2 (2)"
        "instructflow-policy-smoke v2 was trained on the dataset in /data/prefs"
    )
    assert "that run's report holds its evaluation" in str(e.value)


def test_the_cli_says_it_in_one_line_and_exits_2(client, capsys):
    code = main(
        ["promote", "--version", "7", "--model", "instructflow-policy-smoke", "--reason", "x"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err == (
        "instructflow: instructflow-policy-smoke has no version 7 "
        "(versions: 1, 2; aliases: champion -> v1)\n"
    )


def test_evaluate_looks_where_its_profile_registers_and_refuses_before_any_flow(client, capsys):
    # --profile smoke without --model: instructflow-policy-smoke, whose v2 came from a dataset
    code = main(["evaluate", "2", "--profile", "smoke"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("instructflow: instructflow-policy-smoke v2 was trained on")
    assert "Traceback" not in err


def test_promoting_the_champion_again_changes_nothing_and_says_so(client, capsys):
    assert (
        main(["promote", "--version", "1", "--model", "instructflow-policy-smoke", "--reason", "x"])
        == 0
    )
    assert (
        capsys.readouterr().out
        == "instructflow-policy-smoke v1 is champion already: nothing changed\n"
    )
    assert "promoted_by" not in client.get_model_version("instructflow-policy-smoke", "1").tags
    # while another version moves the alias, recording the override
    assert (
        main(["promote", "--version", "2", "--model", "instructflow-policy-smoke", "--reason", "y"])
        == 0
    )
    tags = client.get_model_version("instructflow-policy-smoke", "2").tags
    assert (tags["promoted_by"], tags["previous_champion"]) == ("manual", "1")
    # and --profile names the registered policy as `evaluate --profile` does
    capsys.readouterr()
    assert main(["promote", "--version", "1", "--profile", "smoke", "--reason", "z"]) == 0
    assert capsys.readouterr().out == "instructflow-policy-smoke v1 is now champion (manual: z)\n"


def test_a_promotion_without_a_reason_is_one_line(client, capsys):
    code = main(
        ["promote", "--version", "2", "--model", "instructflow-policy-smoke", "--reason", " "]
    )
    assert code == 2
    assert capsys.readouterr().err == "instructflow: a manual promotion needs a reason (--reason)\n"
