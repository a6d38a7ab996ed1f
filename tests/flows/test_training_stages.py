"""Which stages take a training slot: declared once, on the stage's task, and obeyed by run_stage.

A stage task that holds the slot while it runs (tracked_stage(..., training=True),
or training_slot() itself) must be declared with @takes_training_slot, so that
a flow's run_stage takes the slot before the stage's lock (tasks.concurrency.stage_lock
says why that order); a task that trains nothing must not be.
"""

import ast
import importlib
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
from prefect import Task

from instructflow.flows import stages
from instructflow.tasks import comparisons, concurrency, dataset_stage, ppo, sft
from instructflow.tasks.stage import DONE_MARKER

TASKS_DIR = Path(__file__).resolve().parents[2] / "tasks"


def _name(node: ast.expr) -> str:
    """`f` of a call to f or to module.f."""
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def _holds_slot(function: ast.FunctionDef) -> bool:
    """Whether the function's body takes a training slot (as tasks/tracked.py does for
    training=True)."""
    for node in ast.walk(function):
        if not isinstance(node, ast.Call):
            continue
        if _name(node.func) == "training_slot":
            return True
        if _name(node.func) == "tracked_stage":
            for keyword in node.keywords:
                if keyword.arg == "training" and not (
                    isinstance(keyword.value, ast.Constant) and keyword.value.value is False
                ):
                    return True
    return False


def stage_tasks() -> dict[str, tuple[Task, bool]]:
    """module.function -> (its Prefect task, whether its code holds a training slot), for
    every @task function in tasks/."""
    found = {}
    for path in sorted(TASKS_DIR.rglob("*.py")):
        module_name = ".".join(
            ("instructflow", *path.relative_to(TASKS_DIR.parent).with_suffix("").parts)
        )
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and any(
                _name(d.func if isinstance(d, ast.Call) else d) == "task"
                for d in node.decorator_list
            ):
                task = getattr(importlib.import_module(module_name), node.name)
                found[f"{module_name}.{node.name}"] = (task, _holds_slot(node))
    return found


def test_every_stage_task_that_holds_a_training_slot_is_declared_so_and_no_other() -> None:
    found = stage_tasks()
    assert "instructflow.tasks.sft.sft_task" in found  # the scan sees the stage tasks
    assert found["instructflow.tasks.comparisons.comparisons_task"][1]  # training_slot()
    assert not found["instructflow.tasks.dataset_stage.comparisons_task"][1]
    wrong = {
        name: holds
        for name, (task, holds) in found.items()
        if concurrency.takes_training_slot_declared(task) != holds
    }
    assert not wrong, f"declare @takes_training_slot exactly where the task holds a slot: {wrong}"


@pytest.fixture
def slots_taken(tmp_path, monkeypatch) -> list[str]:
    """Stage names run_stage took a training slot for; the stage itself is not run."""
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(tmp_path))
    taken: list[str] = []
    current: list[str] = []

    @contextmanager
    def slot():
        taken.append(current[-1])
        yield

    def call(task, stage_name, stale, reason, out_dir, parent_run_id, kwargs):
        (out_dir / DONE_MARKER).parent.mkdir(parents=True, exist_ok=True)
        return SimpleNamespace(name="Completed", result=lambda: {"metrics": {}})

    monkeypatch.setattr(stages.concurrency, "training_slot", slot)
    monkeypatch.setattr(stages, "_call", call)
    monkeypatch.setattr(stages, "get_run_logger", lambda: SimpleNamespace(info=print))
    monkeypatch.setattr(stages.tracking.batched, "add_metrics", lambda *a: None)
    monkeypatch.setattr(stages, "relocated", lambda result, out_dir: result)
    monkeypatch.setattr(stages, "run_status", SimpleNamespace(at_stage=current.append))
    return taken


@pytest.mark.parametrize(
    ("task", "stage_name", "takes"),
    [
        (sft.sft_task, "sft", True),
        (sft.sft_task, "flan", True),
        (ppo.ppo_task, "ppo_ptx", True),
        (comparisons.comparisons_task, "comparisons", True),  # samples on the training cores
        # The user's own preferences are copied, not sampled: nothing to wait a slot for.
        (dataset_stage.comparisons_task, "comparisons", False),
    ],
)
def test_run_stage_takes_a_slot_as_the_task_declares(slots_taken, task, stage_name, takes):
    stages.run_stage(task, stage_name, {}, {}, "parent-run")
    assert slots_taken == ([stage_name] if takes else [])
