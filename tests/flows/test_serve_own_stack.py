"""Runs beside `make serve`, on a serve.sh stack of this module's own.

- `make demo` (`instructflow run`) in another shell while `make serve` is up uses the
  servers `make serve` started (tasks/served_stack.py): its flow run is on the served
  Prefect API, its MLflow runs on the served MLflow, and no temporary Prefect server of
  its own runs on the database the served one holds.
- `make serve` after the stack was down over a scheduled run's time (flows/schedules.py):
  Prefect keeps such a run Scheduled (Late), and the worker `make serve` starts runs it at
  once; serve.sh says so, naming the run and the command that cancels it.

- `make stop` while a flow run trains (flows/stop_runs.py): it names the run, cancels it
  through Prefect's API and waits for it to end Cancelled, its report `interrupted`, before
  it stops the worker and the servers (a worker's run is in a session of its own, out of
  the worker's process group: it ran on, orphaned, against servers that were gone).

Not the session's live_stack: these runs register smoke model versions, which the live
stack's tests count on not being there, the second test stops the worker and the third
the stack. In this order: the first needs no worker, the second kills it and runs serve.sh
again, the third runs `make stop` (last: the stack is down after it).
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
from tests.live_stack import served_stack

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
    again = own_stack.script("serve.sh")
    assert again.returncode == 0, again.stdout + again.stderr
    # then it names the late run, with the command that cancels it
    assert "fell due while the stack was down" in again.stdout, again.stdout
    assert f"flow-run cancel {run_id}" in again.stdout
    # and, as it says, the new worker starts it
    assert "started a worker" in again.stdout
    flow_run = own_stack.wait(run_id, timeout=600)
    assert flow_run["state"]["type"] == "COMPLETED", own_stack.logs(run_id)


def _wait_for_a_stage(stack, run_id: str, timeout: float = 300) -> None:
    """Until the flow run runs a stage (a task run Running), not just its imports."""
    deadline = time.monotonic() + timeout
    query = {
        "flow_runs": {"id": {"any_": [run_id]}},
        "task_runs": {"state": {"type": {"any_": ["RUNNING"]}}},
    }
    while time.monotonic() < deadline:
        if stack.request("POST", "/task_runs/filter", json=query).json():
            return
        time.sleep(1)
    raise AssertionError(f"no stage ran within {timeout} s:\n{stack.logs(run_id)}")


def test_make_stop_during_a_run_cancels_it_and_waits_for_it_to_end_interrupted(
    own_stack, fast_smoke
):
    # given a manual-run that trains (a base model of many steps: minutes, not seconds)
    params = fast_smoke(seed=SEED, base={"steps": 5000})
    run_id = own_stack.run_deployment("rlhf_pipeline/manual-run", {"params": params})
    _wait_for_a_stage(own_stack, run_id)
    # when make stop runs
    stopped = own_stack.script("stop.sh")
    out = stopped.stdout + stopped.stderr
    # then it named the run and waited for it to end Cancelled before it stopped the worker
    assert f"({run_id}, Running)" in out, out
    ended = out.index(" ended ")
    assert out[ended:].startswith(" ended Cancelled"), out
    assert ended < out.index("stopping worker"), out
    # and the run stopped cleanly: its report says interrupted
    reports = [
        json.loads(path.read_text())
        for path in (own_stack.checkout / "reports").glob("*/report.json")
    ]
    (report,) = [r for r in reports if r["run"].get("prefect_flow_run_id") == run_id]
    assert report["status"] == "interrupted", report
