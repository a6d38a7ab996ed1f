"""A run on your own data started from the Prefect form or API (no CLI preflight) refuses a
missing dataset folder, a bad row or a missing base model as the CLI does: in the same words,
no traceback, nothing trained."""

import json

import pytest

from instructflow.flows import explained_errors
from instructflow.flows.params import PipelineParams
from tests.own_data import write_hh_dataset
from tests.tiny_models import tiny_llama


@pytest.fixture
def project(tmp_path, monkeypatch, prefect_harness):
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    return root


def _refusal(params: PipelineParams) -> tuple[str, BaseException]:
    from instructflow.flows.pipeline import rlhf_pipeline

    state = rlhf_pipeline(params, return_state=True)  # as a worker runs a deployment's flow run
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, BaseException)
    return state.message, error


def _nothing_trained(root) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs] == ["FAILED"]  # the parent run, with the reason
    assert client.search_registered_models() == []
    assert not (root / "runs").exists() or not any((root / "runs").glob("sft*"))


def test_a_missing_dataset_folder_is_refused_not_a_crash(project, tmp_path):
    llama = tiny_llama(tmp_path / "llama", ["hello there, how are you today"] * 20)
    missing = tmp_path / "no-such-data"

    message, error = _refusal(
        PipelineParams(profile="smoke", data=str(missing), base_model=str(llama))
    )

    assert explained_errors.is_explained(error)  # logged without a traceback
    assert f"{missing} field 'data': no such directory" in message
    _nothing_trained(project)
    # worded, and recorded in MLflow, as a refusal of a bad base model is (test below)
    assert message.startswith("refused before training: 1 problem found:\n"), message
    _refusal_recorded(project, f"{missing} field 'data': no such directory")


def test_a_bad_row_is_refused_as_the_cli_refuses_it(project, tmp_path):
    # given a dataset whose row 5 does not end on an assistant turn, run from the form
    data = write_hh_dataset(tmp_path / "hh", n_pairs=30)
    llama = tiny_llama(tmp_path / "llama", [p.read_text() for p in data.iterdir()])
    prefs = [json.loads(line) for line in (data / "preferences.jsonl").read_text().splitlines()]
    prefs[4]["chosen"] += "\n\nHuman: and?"
    (data / "preferences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in prefs))
    message, error = _refusal(
        PipelineParams(profile="smoke", data=str(data), base_model=str(llama))
    )
    # then the import refuses it in the words `instructflow run` uses, before any training
    assert explained_errors.is_explained(error)
    assert message.startswith("refused before training: 1 problem found:\n"), message
    assert "preferences.jsonl row 5 field 'chosen': does not end on an assistant turn" in message
    # and the parent run records the refusal (beside it, the import stage's run FAILED)
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert sorted(r.info.run_name.split("-")[0] for r in runs) == ["data", "rlhf"]
    assert {r.info.status for r in runs} == {"FAILED"}
    (parent,) = [r for r in runs if r.data.tags.get("refused") == "true"]
    assert parent.data.tags["failure_reason"].startswith("refused before training: ")
    assert client.search_registered_models() == []
    assert not (project / "runs").exists() or not any((project / "runs").glob("sft*"))


def test_a_dataset_without_a_base_model_is_refused_not_a_crash(project, tmp_path):
    message, error = _refusal(PipelineParams(profile="smoke", data=str(tmp_path)))

    assert explained_errors.is_explained(error)
    assert "needs a base model" in message and "base_model" in message
    _nothing_trained(project)


def _refusal_recorded(root, words: str) -> None:
    """The MLflow parent run is FAILED and says why, as a refusal of bad rows does."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.data.tags["refused"] == "true"
    assert words in run.data.tags["failure_reason"]


@pytest.mark.parametrize("own_data", [True, False], ids=["own-data", "embedded-world"])
def test_a_missing_base_model_dir_is_refused_in_mlflow_too(project, tmp_path, own_data):
    # given a run from the Prefect form whose base model names a folder that does not exist
    missing = tmp_path / "no-such-model"
    data = {"data": str(tmp_path)} if own_data else {}
    # when the flow runs
    message, error = _refusal(PipelineParams(profile="smoke", base_model=str(missing), **data))
    # then the flow run's state names the folder and the field, without a traceback
    assert explained_errors.is_explained(error)
    assert f"{missing} field 'base_model': no such directory" in message
    # and MLflow, where the person who triggered it looks, has the parent run FAILED saying so
    _nothing_trained(project)
    _refusal_recorded(project, f"{missing} field 'base_model': no such directory")
