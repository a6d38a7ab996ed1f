"""`--processes N`: a stage's function under `accelerate launch` (gloo on this CPU machine).

That N processes compute what one does is tests/tasks/test_processes.py.
"""

import os
import time
from pathlib import Path

import pytest

from instructflow.tasks import launch
from tests.tasks import launch_targets

ROOT = Path(__file__).resolve().parents[2]


def test_one_process_runs_in_this_process(tmp_path):
    logged = []
    result = launch.run(
        lambda log, x: log(0, {"x": x}) or x + 1,
        {"x": 1},
        processes=1,
        work_dir=tmp_path,
        log=lambda step, metrics: logged.append(metrics),
        log_prefix="t",
    )
    assert result == 2 and logged == [{"x": 1}] and not (tmp_path / launch.FOLDER).exists()


def test_a_failing_process_fails_the_stage_with_its_message_in_one_line(
    tmp_path, monkeypatch, capfd
):
    # the launched processes import the target from tests/
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    started = time.perf_counter()
    with pytest.raises(launch.ProcessFailed) as failed:
        launch.run(
            launch_targets.log_then_fail_on_rank_one,
            {},
            processes=2,
            work_dir=tmp_path,
            log=None,
            log_prefix="probe",
        )
    assert str(failed.value) == (
        "process 1 of 2 failed: ValueError: demonstrations.jsonl row 7: response is empty"
    )
    assert time.perf_counter() - started < 60  # rank 0 was stopped, not left waiting
    # rank 0 alone logs (to the stage's MLflow run and the console)
    out = capfd.readouterr().out
    assert out.count("[probe] step 0: rank=0") == 1 and "rank=1" not in out
