"""`instructflow run` on a disk that fills during the base model's training: one line that
says so (not "lost a service"), no retry, nothing registered; with space again, the same
command completes."""

import pytest
from mlflow import MlflowClient

from tests.conftest import cli_env, cli_output, small_filesystem, start_cli
from tests.flows.test_faults import mlflow_runs

pytestmark = pytest.mark.slow


def test_a_full_disk_stops_the_run_in_one_line_and_the_same_command_resumes(
    prefect_harness, make_project, fast_smoke
):
    root = make_project()
    params, env = fast_smoke(), cli_env(root)
    # given a project whose base-model outputs land on a 64 KiB file system
    with small_filesystem(root / "runs" / "base_model", "64k"):
        # when the pipeline runs
        proc = start_cli(root, params, env)
        output = cli_output(proc, 600)
    # then it stops with the disk-full line, naming where it was writing, exit 3
    last = output.strip().splitlines()[-1]
    assert proc.returncode == 3, output[-3000:]
    assert last.startswith("instructflow: the disk is full"), last
    assert "runs/base_model" in last and "run the same command again" in last
    assert "lost a service" not in output
    # and Prefect's log of the failure carries no traceback above that line
    assert "Traceback" not in output, output[-3000:]
    # and the stage was not retried (one MLflow run of it) and nothing was registered
    stages = [r.data.tags.get("stage") for r in mlflow_runs(root)]
    assert stages.count("base_model") == 1, stages
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    assert client.search_registered_models() == []

    # when there is space again and the same command runs
    proc = start_cli(root, params, env)
    output = cli_output(proc, 900)
    # then it completes
    assert proc.returncode == 0, output[-3000:]
    assert (root / "reports" / "latest" / "report.json").exists()
