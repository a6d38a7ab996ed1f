"""`instructflow run` and `sweep` import with garbage collection off and start their flow with the imports frozen (tasks/heap.py)."""

import gc

import pytest

from instructflow.flows.cli import main
from instructflow.tasks import heap
from tests.conftest import use_project


@pytest.fixture
def seen(monkeypatch) -> dict:
    """What the command's imports_done and its flow found; the test process's heap put back after."""
    seen: dict = {}
    real_imports_done = heap.imports_done

    def imports_done():
        seen["collecting_while_importing"] = gc.isenabled()
        real_imports_done()

    monkeypatch.setattr(heap, "imports_done", imports_done)
    yield seen
    gc.unfreeze()
    gc.enable()


def _flow_start(seen: dict) -> None:
    seen.update(collecting=gc.isenabled(), frozen=gc.get_freeze_count() > 0)


def test_sweep(monkeypatch, seen):
    from instructflow.flows import sweep

    def fake_sweep(params, seeds, workers):
        _flow_start(seen)
        return {"sweep": {}}

    monkeypatch.setattr(sweep, "run_sweep", fake_sweep)
    assert main(["sweep", "--seeds", "0", "--profile", "smoke"]) == 0
    assert seen == {"collecting_while_importing": False, "collecting": True, "frozen": True}


def test_run(make_project, monkeypatch, seen):
    from instructflow.flows import pipeline

    use_project(monkeypatch, make_project())

    def fake_pipeline(params, return_state):
        from prefect.states import Completed

        _flow_start(seen)
        return Completed(data={"run": {}})

    monkeypatch.setattr(pipeline, "rlhf_pipeline", fake_pipeline)
    assert main(["run", "--profile", "smoke"]) == 0
    assert seen == {"collecting_while_importing": False, "collecting": True, "frozen": True}


def test_a_refused_run_leaves_collection_on(tmp_path, monkeypatch, seen):
    # given a run refused before its flow (a params file that does not exist)
    assert main(["run", "--params", str(tmp_path / "missing.json")]) == 2
    # then collection is on again all the same
    assert gc.isenabled() and "collecting_while_importing" not in seen
