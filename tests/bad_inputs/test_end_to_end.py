"""A refusal end to end: through the CLI before Prefect starts, and through the flow (a deployment run).

What the user sees (exit 2, one message naming file, row and field, no
traceback) and what is left (the MLflow parent run FAILED with the reason,
no stage output, nothing registered).
"""

import json
import time

import pytest
from mlflow import MlflowClient

from instructflow.flows.cli import main
from instructflow.tasks import tracking
from instructflow.world import layout
from tests.bad_inputs.conftest import edit_row, human_rows, write_rows


@pytest.fixture
def project(make_project, monkeypatch, tmp_path):
    root = make_project()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return root, MlflowClient(tracking_uri=uri)


def runs_of(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
    return client.search_runs([experiment.experiment_id]) if experiment else []


NOT_STAGE_OUTPUTS = {
    "preflight",
    "prefect-results",
    ".live",
    ".data.lock",
    ".training-slots",
    ".stage-locks",
}


def stage_outputs(root) -> list[str]:
    runs = root / "runs"
    return (
        # not stage outputs: the refusal's own record, cached results, and locks (live runs,
        # data/, training slots, stages)
        sorted(p.name for p in runs.iterdir() if p.name not in NOT_STAGE_OUTPUTS)
        if runs.exists()
        else []
    )


def test_the_cli_refuses_a_bad_table_in_seconds_with_exit_2(project, capsys):
    root, client = project
    # given a demonstration with a missing field (data/ no longer matches data.dvc: allowed)
    bad = root / "data" / "smoke" / layout.SFT_TRAIN
    edit_row(bad, 7, response=None)
    started, cpu = time.monotonic(), time.process_time()
    code = main(["run", "--profile", "smoke", "--allow-data-mismatch"])
    seconds, cpu_seconds = time.monotonic() - started, time.process_time() - cpu
    print(f"refusal: {seconds:.1f} s wall, {cpu_seconds:.1f} s CPU")
    err = capsys.readouterr().err
    # then exit 2, one message naming file, row and field, no traceback
    assert code == 2
    assert f"{bad} row 7 field 'response'" in err
    assert "Traceback" not in err
    # CPU time: on a shared 2-core machine the wall time says more about the neighbours
    assert cpu_seconds < 30, f"refusal took {cpu_seconds:.1f} s of CPU ({seconds:.1f} s wall)"
    # and MLflow holds one parent run, FAILED, with the reason; nothing trained or registered
    (run,) = runs_of(client)
    assert run.info.status == "FAILED"
    assert f"{bad} row 7 field 'response'" in run.data.tags["failure_reason"]
    assert run.info.run_name == "rlhf-smoke-seed0-refused"  # as a flow's run: profile, seed
    assert stage_outputs(root) == []
    assert client.search_registered_models() == []


def test_the_cli_refuses_a_missing_base_model_dir_as_a_bad_table(project, tmp_path, capsys):
    root, client = project
    # given a base model that names a folder that does not exist
    missing = tmp_path / "no-such-model"
    code = main(["run", "--profile", "smoke", "--base-model", str(missing)])
    err = capsys.readouterr().err
    # then exit 2, one message naming the folder and the field, no traceback
    assert code == 2
    assert f"{missing} field 'base_model': no such directory" in err
    assert "Traceback" not in err
    # and MLflow holds one parent run, FAILED, with the reason, as for a bad table
    (run,) = runs_of(client)
    assert run.info.status == "FAILED"
    assert f"{missing} field 'base_model'" in run.data.tags["failure_reason"]
    assert stage_outputs(root) == []


def test_a_bad_params_file_exits_2_with_one_line(project, tmp_path, capsys):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"params": {"ppo": {"lr": -1}}}))
    assert main(["run", "--profile", "smoke", "--params", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["instructflow: params: ppo.lr = -1 is not allowed; expected a number > 0"]


def test_the_example_params_file_runs_as_a_smoke_run(project, tmp_path, capsys, monkeypatch):
    # given `instructflow params --example > p.json`
    assert main(["params", "--example"]) == 0
    path = tmp_path / "p.json"
    path.write_text(capsys.readouterr().out)
    # when `instructflow run --profile smoke --params p.json` starts the flow
    started = {}

    def fake_flow(params, return_state):
        from prefect.states import Completed

        started["params"] = params
        return Completed(data={"run": {"ok": True}})

    import instructflow.flows.pipeline

    monkeypatch.setattr(instructflow.flows.pipeline, "rlhf_pipeline", fake_flow)
    assert main(["run", "--profile", "smoke", "--params", str(path)]) == 0
    # then it passed every check and the flow got the smoke run's settings
    from instructflow.flows.params import PipelineParams

    assert started["params"] == PipelineParams(profile="smoke")


@pytest.mark.slow
def test_a_deployment_run_with_bad_human_comparisons_fails_without_training(
    project, prefect_harness, fast_smoke, tmp_path
):
    from instructflow.flows.params import PipelineParams
    from instructflow.flows.pipeline import rlhf_pipeline
    from instructflow.tasks.preflight import InputRefused

    root, client = project
    # given human comparisons whose row 3 ranks a response twice
    human = tmp_path / "human.jsonl"
    write_rows(human, human_rows(root / "data" / "smoke"))
    edit_row(human, 3, ranking=[0, 0, 1, 2])
    params = PipelineParams(**fast_smoke(comparisons={"human_comparisons": str(human)}))
    # when the flow runs (as a deployment's run does, without the CLI's check first)
    with pytest.raises(InputRefused, match=rf"{human} row 3 field 'ranking'"):
        rlhf_pipeline(params)
    # then its parent run is FAILED with the reason, and nothing trained or was registered
    (run,) = runs_of(client)
    assert run.info.status == "FAILED"
    assert "row 3 field 'ranking'" in run.data.tags["failure_reason"]
    assert stage_outputs(root) == []
    assert client.search_registered_models() == []
