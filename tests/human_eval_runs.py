"""A finished run as the pipeline leaves one for `instructflow eval export`, built without
training: a project's MLflow store, the evaluation's response rows as the stage's
artifacts under a parent run, and the report (reports/<run id>/ and reports/latest/)."""

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow

from instructflow.tasks import tracking


@contextmanager
def parent_run_with_responses(
    root: Path, monkeypatch, rows_of: Callable[[str], list[dict]], policies: tuple[str, ...]
) -> Iterator[str]:
    """In project `root`, a parent MLflow run (its id yielded, still open) whose evaluation
    stage logged each policy's rows `rows_of(policy)` as responses/<policy>.jsonl."""
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    tracking.setup()
    responses = root / "evaluation" / "responses"
    responses.mkdir(parents=True)
    for policy in policies:
        lines = "".join(json.dumps(row) + "\n" for row in rows_of(policy))
        (responses / f"{policy}.jsonl").write_text(lines)
    with mlflow.start_run(run_name="rlhf-smoke") as parent:
        with tracking.stage_run("evaluation", parent.info.run_id):
            mlflow.log_artifacts(str(root / "evaluation"), artifact_path="evaluation")
        yield parent.info.run_id


def write_report(root: Path, run_id: str, gate: dict | None) -> None:
    """The run's report.json, in its own folder and as reports/latest."""
    report = {
        "run": {"mlflow_run_id": run_id},
        "labelers": {},
        "reward_model": {},
        "policies": {},
        "gate": gate,
    }
    for folder in (root / "reports" / run_id, root / "reports" / "latest"):
        folder.mkdir(parents=True)
        (folder / "report.json").write_text(json.dumps(report))
