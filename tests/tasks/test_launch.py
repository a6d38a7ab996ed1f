"""`--processes N`: a stage's function under `accelerate launch` (gloo on this CPU machine)."""

import os
import time
from pathlib import Path

import pytest

from instructflow.tasks import launch
from tests.tasks import launch_targets

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def importable_tests(monkeypatch):
    """The launched processes import the target functions from tests/: put the checkout on their path."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def test_one_process_runs_in_this_process(tmp_path):
    logged = []
    result = launch.run(
        lambda log, x: x + 1,
        {"x": 1},
        processes=1,
        work_dir=tmp_path,
        log=lambda s, m: logged.append(m),
        log_prefix="t",
    )
    assert result == 2 and not (tmp_path / launch.FOLDER).exists()


def test_two_processes_join_with_gloo_and_rank_zero_returns(tmp_path, importable_tests, capfd):
    result = launch.run(
        launch_targets.rank_sum, {}, processes=2, work_dir=tmp_path, log=None, log_prefix="probe"
    )
    assert result == {"total": 3.0, "size": 2, "backend": "gloo"}
    # rank 0 alone logs; the launch folder is cleaned up
    assert capfd.readouterr().out.count("[probe] step 0: total=3") == 1
    assert not (tmp_path / launch.FOLDER).exists()


def test_a_failing_process_fails_the_stage_with_its_message_in_one_line(tmp_path, importable_tests):
    started = time.perf_counter()
    with pytest.raises(launch.ProcessFailed) as failed:
        launch.run(
            launch_targets.fail_on_rank_one,
            {},
            processes=2,
            work_dir=tmp_path,
            log=None,
            log_prefix="t",
        )
    message = str(failed.value)
    assert (
        message
        == "process 1 of 2 failed: ValueError: demonstrations.jsonl row 7: response is empty"
    )
    assert time.perf_counter() - started < 60  # rank 0 was stopped, not left waiting
