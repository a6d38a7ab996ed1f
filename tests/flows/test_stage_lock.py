"""Two runs reaching one stage at once (a schedule's run overlapping the one before it,
with the same parameters): the stage is computed once, and the second run takes it from
the cache instead of emptying and rewriting the folder the first is writing."""

import contextvars
import shutil
import threading
import time
from pathlib import Path

from prefect import flow, task

from instructflow.flows import stages
from instructflow.tasks.stage import mark_done, prefect_options
from tests.conftest import use_project

CALLS: list[str] = []
# The first run is inside its stage; the second run has set off towards the same stage.
INSIDE, SECOND_SET_OFF = threading.Event(), threading.Event()


@task(**prefect_options("evaluation", "test-stage-lock"))
def slow_stage(out_dir: str, parent_run_id: str, note: str) -> dict:
    """A stage that takes a second once the other run has set off: empties its folder,
    writes, marks itself done."""
    CALLS.append(note)
    INSIDE.set()
    SECOND_SET_OFF.wait(60)
    out = Path(out_dir)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    time.sleep(1.0)
    (out / "written_by.txt").write_text(note)
    return mark_done(out, {"dir": out_dir, "metrics": {}, "mlflow_run_id": note})


@flow
def two_runs_at_once(salt: str) -> list[dict]:
    results: list[dict] = []

    def one_run(note: str) -> None:
        if note == "second":
            SECOND_SET_OFF.set()
        # `note` is not a key argument: both runs compute the same stage key
        result = stages.run_stage(slow_stage, "evaluation", {"salt": salt}, {}, "parent", note=note)
        results.append(result)

    threads = [
        threading.Thread(target=contextvars.copy_context().run, args=(one_run, note))
        for note in ("first", "second")
    ]
    # the second starts once the first is inside its stage (a fixed 0.3 s let a loaded
    # machine start it before the first had taken the stage)
    threads[0].start()
    assert INSIDE.wait(60)
    threads[1].start()
    for thread in threads:
        thread.join(60)
    return results


def test_a_stage_two_runs_reach_at_once_is_computed_once(
    prefect_harness, tmp_path, monkeypatch, no_mlflow
):
    use_project(monkeypatch, tmp_path)
    CALLS.clear()
    INSIDE.clear()
    SECOND_SET_OFF.clear()
    # given two runs that reach the same stage key, the second while the first is inside
    # the stage, which takes 1 s after the second set off
    results = two_runs_at_once(str(tmp_path))
    # then the stage ran once, and both runs have its result, its files intact
    assert CALLS == ["first"]
    assert len(results) == 2
    assert [r["mlflow_run_id"] for r in results] == ["first", "first"]
    assert (Path(results[0]["dir"]) / "written_by.txt").read_text() == "first"
