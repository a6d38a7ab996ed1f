"""A run let through on data its .dvc file does not record (--allow-data-mismatch) says so
in its report, not only in an MLflow tag."""

import json

import pytest

from tests.conftest import flip_one_byte, use_project


@pytest.mark.slow
def test_a_mismatch_run_is_marked_in_its_report(
    prefect_harness, make_project, fast_smoke, monkeypatch
):
    # given a project whose data/ no longer matches data.dvc (one byte of an SFT row)
    root = make_project()
    use_project(monkeypatch, root)
    flip_one_byte(root / "data" / "smoke" / "sft" / "train.jsonl")
    from instructflow.flows.params import PipelineParams
    from instructflow.flows.pipeline import rlhf_pipeline

    # when a run is let through on it
    result = rlhf_pipeline(PipelineParams(**fast_smoke(allow_data_mismatch=True)))
    # then report.json and report.md mark it (they showed the folder's md5 as if recorded)
    assert result["status"] == "completed" and result["run"]["data_mismatch"] is True
    latest = root / "reports" / "latest"
    assert json.loads((latest / "report.json").read_text())["run"]["data_mismatch"] is True
    assert "| data_mismatch | `True` |" in (latest / "report.md").read_text()
    # and so does the registered version, where a team looks (tag and card): `dvc checkout`
    # at its commit would restore other data than it was trained on
    from mlflow import MlflowClient

    gate = result["gate"]
    version = MlflowClient().get_model_version(gate["model_name"], gate["policy_version"])
    assert version.tags["data_mismatch"] == "true"
    assert "data NOT the version its .dvc file records" in version.description
