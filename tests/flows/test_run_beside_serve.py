"""`make demo` (`instructflow run`) in another shell while `make serve` is up.

The run uses the servers `make serve` started (tasks/served_stack.py): its flow run is
on the served Prefect API, its MLflow runs on the served MLflow, and no temporary
Prefect server of its own runs on the database the served one holds. A stack of its
own (not the session's live_stack): this run registers smoke model versions, which the
live stack's tests count on not being there.
"""

import json
import subprocess
import time

import pytest
from mlflow import MlflowClient

from instructflow.tasks import tracking
from instructflow.tasks.leftovers import ephemeral_servers
from tests.conftest import served_stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory):
    with served_stack(tmp_path_factory.mktemp("beside-serve")) as stack:
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
    params.write_text(json.dumps(fast_smoke(seed=3)))
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
