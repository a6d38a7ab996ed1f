"""A cancel from Prefect reaches a worker's flow run as SIGTERM: the running training loop
checkpoints its step and stops, as under `instructflow run` (tasks/interrupts.reclaim).

The child stands in for the flow-run process a worker starts (`PREFECT__FLOW_RUN_ID` set):
Prefect's SIGTERM handler, which raises at once wherever the run is, is in place, as the
engine leaves it; then a training loop takes its checkpoint store (tasks/checkpoints.store).
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

CHILD = textwrap.dedent(
    """
    import signal, sys, time
    from pathlib import Path
    from prefect.exceptions import TerminationSignal
    from instructflow.models.checkpoints import after_step
    from instructflow.tasks import checkpoints

    def prefects(signum, frame):  # what Prefect's engine installs: raise wherever the run is
        raise TerminationSignal(signal=signum)

    signal.signal(signal.SIGTERM, prefects)
    out = Path(sys.argv[1])
    store = checkpoints.store(out, every=1000)
    try:
        for step in range(1, 100000):
            time.sleep(0.01)  # a training step
            after_step(store, step, lambda: {"step": step})
            if step == 5:
                (out / "started").write_text("")
    except BaseException as error:
        print(f"{type(error).__name__}: {error}", flush=True)
        raise SystemExit(3)
    """
)


@pytest.mark.parametrize("worker_run", [True, False])
def test_sigterm_to_a_worker_run_checkpoints_the_running_step(tmp_path, worker_run):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT__FLOW_RUN_ID"}
    if worker_run:
        env["PREFECT__FLOW_RUN_ID"] = str(uuid.uuid4())
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        env=env,
        stdin=subprocess.DEVNULL,  # stdout a file, not a pipe: no worker to outlive
        stdout=(tmp_path / "out.txt").open("w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while not (tmp_path / "started").exists():
        assert proc.poll() is None, (tmp_path / "out.txt").read_text()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 3
    output = (tmp_path / "out.txt").read_text()
    saved = sorted(p.name for p in (tmp_path / "resume").glob("step-*"))
    if worker_run:
        # then the loop stopped after its step, with a checkpoint of it
        assert "SIGTERM: stopping after the current step..." in output
        assert "TrainingInterrupted: stopped after step" in output, output
        step = int(output.split("stopped after step ")[1].split(";")[0])
        assert saved == [f"step-{step:09d}"]
    else:
        # a flow called in this process (tests, a notebook) keeps Prefect's handler
        assert "TerminationSignal" in output and saved == [], output
