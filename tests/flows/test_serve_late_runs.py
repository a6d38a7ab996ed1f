"""`make serve` after the stack was down over a scheduled run's time (flows/schedules.py).

Prefect keeps such a run Scheduled (Late), and the worker `make serve` starts runs it at
once: serve.sh says so before, naming the run and the command that cancels it. A stack of
its own: the worker is stopped here, and its run registers smoke models.
"""

import datetime
import os
import signal
import subprocess
import time

import pytest

from tests.conftest import served_stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory):
    with served_stack(tmp_path_factory.mktemp("late-runs")) as stack:
        yield stack


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
            "parameters": {"params": fast_smoke(seed=5)},
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
