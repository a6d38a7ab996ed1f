"""`rm -rf data` then `instructflow run`: the CLI's preflight restores data/ before the flow
starts, and the flow run's log and MLflow parent run still say it was restored, and from where."""

import shutil

import mlflow
from mlflow import MlflowClient

from instructflow.flows import world_stages
from instructflow.flows.params import PipelineParams
from instructflow.flows.stages import Stages
from instructflow.tasks import data, preflight, tracking
from tests.conftest import use_project


def test_a_restore_by_the_cli_preflight_reaches_the_flow_log_and_parent_run(
    make_project, prefect_harness, monkeypatch
):
    from prefect import flow

    # given a project whose data/ a run stored in DVC, then `rm -rf data`
    root = make_project()
    uri = use_project(monkeypatch, root)
    data.ensure_data(root)
    shutil.rmtree(root / "data")
    params = PipelineParams(profile="smoke")
    # when the CLI's preflight restores it (before Prefect starts), then the flow's data step runs
    assert preflight.refusal_of(params, root)[1] is None
    lines: list[str] = []

    class Recording:
        def info(self, message, *args):
            lines.append(message % args if args else message)

    monkeypatch.setattr(world_stages, "get_run_logger", Recording)

    @flow
    def data_step() -> str:
        tracking.setup()
        with mlflow.start_run() as parent:
            stage = Stages(params, root / "data" / params.profile, parent.info.run_id, 1)
            world_stages.checked_data(root, params, None, stage)
        return parent.info.run_id

    parent_id = data_step()
    # then the flow run's log says data/ was missing and restored from DVC's cache
    cache = root / ".dvc" / "cache"
    (line,) = [line for line in lines if line.startswith("data/ is DVC version")]
    assert line.endswith(f"(missing: restored by dvc pull from DVC cache {cache})"), line
    # and so does the MLflow parent run
    tags = MlflowClient(uri).get_run(parent_id).data.tags
    assert tags["data_restored_by"] == "dvc pull"
    assert tags["data_restored_from"] == f"DVC cache {cache}"
