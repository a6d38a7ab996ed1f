"""Runs beside `make serve`, on a serve.sh stack of this module's own.

- `make demo` (`instructflow run`) in another shell while `make serve` is up uses the
  servers `make serve` started (tasks/served_stack.py): its flow run is on the served
  Prefect API, its MLflow runs on the served MLflow, and no temporary Prefect server of
  its own runs on the database the served one holds.
- `make serve` after the stack was down over a scheduled run's time (flows/schedules.py):
  Prefect keeps such a run Scheduled (Late), and the worker `make serve` starts runs it at
  once; serve.sh says so, naming the run and the command that cancels it.

Not the session's live_stack: these runs register smoke model versions, which the live
stack's tests count on not being there, and the second test stops the worker. In this
order: the first needs no worker, the second kills it and runs serve.sh again.
"""

import datetime
import json
import os
import signal
import subprocess
import time

import pytest
from mlflow import MlflowClient

from instructflow.tasks import tracking
from instructflow.tasks.leftovers import ephemeral_servers
from tests.conftest import served_stack

pytestmark = pytest.mark.slow

SEED = 3  # both runs: the worker's run finds the command line's stages cached


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory):
    with served_stack(tmp_path_factory.mktemp("own-stack")) as stack:
        yield stack


def _run_and_watch(stack, argv: list[str], out_dir) -> tuple[int, str, str, set[int]]:
    """Run `argv` in the stack's checkout as a user's other shell would; also the ephemeral
    Prefect servers of the stack's Prefect home seen while it ran."""
    # A shell of its own: PREFECT_HOME as make serve had it, no ports or API URLs exported.
    env = {k: v for k, v in stack.env.items() if k not in {"PREFECT_PORT", "MLFLOW_PORT"}}
    home = env["PREFECT_HOME"]
    stdout, stderr = out_dir / "stdout", out_dir / "stderr"
    seen: set[int] = set()
    with stdout.open("w") as out, stderr.open("w") as err:
        process = subprocess.Popen(argv, cwd=stack.checkout, env=env, stdout=out, stderr=err)
        deadline = time.monotonic() + 600
        while process.poll() is None and time.monotonic() < deadline:
            seen |= set(ephemeral_servers(home))
            time.sleep(0.25)
        if process.poll() is None:
            process.kill()
        process.wait()
    return process.returncode, stdout.read_text(), stderr.read_text(), seen


def test_a_command_line_run_uses_make_serves_servers_not_servers_of_its_own(
    own_stack, fast_smoke, tmp_path
):
    # given `make serve` up, and a smoke run's settings
    params = tmp_path / "params.json"
    params.write_text(json.dumps(fast_smoke(seed=SEED)))
    instructflow = str(own_stack.checkout / ".venv" / "bin" / "instructflow")
    # when `instructflow run` (what `make demo` runs) starts in another shell
    status, out, err, ephemeral = _run_and_watch(
        own_stack, [instructflow, "run", "--params", str(params)], tmp_path
    )
    assert status == 0, err[-4000:]
    # then it started no Prefect server of its own on the served database
    assert ephemeral == set()
    # and it said, in one line, that it uses the served servers
    said = f"using the servers make serve started: Prefect {own_stack.prefect_url}, MLflow {own_stack.mlflow_url}"
    assert said in err
    # and its flow run is the served Prefect's, completed
    run = json.loads(out[out.index("{") :])
    flow_run = own_stack.request("GET", f"/flow_runs/{run['prefect_flow_run_id']}").json()
    assert flow_run["state"]["type"] == "COMPLETED"
    # and its parent MLflow run is on the served MLflow
    client = MlflowClient(tracking_uri=own_stack.mlflow_url)
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
    assert client.get_run(run["mlflow_run_id"]).info.experiment_id == experiment.experiment_id


def _stop_worker(stack) -> None:
    """What a reboot does to the worker, the servers coming back first (stopped by its PID)."""
    pid_file = stack.checkout / ".serve" / "worker.pid"
    pid = int(pid_file.read_text())
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)


def test_make_serve_names_a_run_that_fell_due_while_it_was_down_and_the_worker_starts_it(
    own_stack, fast_smoke
):
    # given no worker, and a scheduled-retrain run that fell due a day ago
    _stop_worker(own_stack)
    deployment = own_stack.request("GET", "/deployments/name/rlhf_pipeline/scheduled-retrain")
    due = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    created = own_stack.request(
        "POST",
        f"/deployments/{deployment.json()['id']}/create_flow_run",
        json={
            "parameters": {"params": fast_smoke(seed=SEED)},
            "state": {
                "type": "SCHEDULED",
                "name": "Scheduled",
                "state_details": {"scheduled_time": due.isoformat()},
            },
        },
    )
    created.raise_for_status()
    run_id = created.json()["id"]
    # when make serve runs again
    again = subprocess.run(
        ["bash", "scripts/serve.sh"],
        cwd=own_stack.checkout,
        env=own_stack.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    # then it names the late run, with the command that cancels it
    assert "fell due while the stack was down" in again.stdout, again.stdout
    assert f"flow-run cancel {run_id}" in again.stdout
    # and, as it says, the new worker starts it
    assert "started a worker" in again.stdout
    flow_run = own_stack.wait(run_id, timeout=600)
    assert flow_run["state"]["type"] == "COMPLETED", own_stack.logs(run_id)
