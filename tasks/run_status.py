"""A run's status in its report: where it stands, where it stopped, what the gate said.

reports/<run id>/report.json is written once the gate has judged, with
status "completed", and only then does reports/latest move (`complete` for
a report written before). If anything fails (or a signal stops the
run), `failure_report` rewrites the run's own report with status "failed" (or
"interrupted"), the stage where it stopped and the error, and reports/latest
stays on the last completed run.
"""

import functools
import json
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from instructflow.tasks import interrupts, report
from instructflow.tasks.outages import RunFault, fault_line
from instructflow.tasks.paths import reports_dir

_progress: ContextVar[dict | None] = ContextVar("instructflow_run_progress", default=None)


def begin(run: dict[str, Any], provenance: dict[str, Any] | None = None) -> None:
    """The pipeline's parent run exists: from here a failure gets a report (with `provenance`,
    where and how it ran: a failed run's machine and threads say as much as a finished one's)."""
    _progress.set({"run": dict(run), "stage": None, "provenance": provenance})


def partial(result: dict) -> None:
    """What the run has found so far (a failed run's report carries it)."""
    progress = _progress.get()
    if progress is not None:
        progress["result"] = result


def describe(fields: dict[str, Any]) -> None:
    """More of the run block, known once the run is under way (a dataset run's folder and
    DVC version): a failed run's report says what it ran on, as a completed one does."""
    progress = _progress.get()
    if progress is not None:
        progress["run"] |= fields


def at_stage(stage: str) -> None:
    progress = _progress.get()
    if progress is not None:
        progress["stage"] = stage


def data_version(profile_dir: Path) -> dict[str, Any]:
    """The world version of the embedded world's data, or the dataset's own version fields."""
    manifest = profile_dir / "manifest.json"
    if not manifest.exists():
        return {}
    fields = json.loads(manifest.read_text())
    return {k: fields[k] for k in ("world_version", "dataset_version", "dataset") if k in fields}


def complete(result: dict, run_dir: Path, markdown_fn) -> None:
    """Status completed (the gate has judged: result["gate"]); then, and only then, move reports/latest."""
    result["status"] = "completed"
    report.write_whole(run_dir / "report.json", json.dumps(result, indent=2) + "\n")
    report.write_whole(run_dir / "report.md", markdown_fn(result))
    report.publish_latest(run_dir, run_dir.parent)


def failure_report(fn):
    """Decorate the flow function: on any exception, write the run's own report saying where it stopped."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        token = _progress.set(None)
        try:
            return fn(*args, **kwargs)
        except BaseException as error:
            progress = _progress.get()
            if progress is not None:
                try:
                    _write_failed(progress, error)
                except OSError:  # the disk that failed the run may refuse this too:
                    pass  # the run's own error is what to tell
            line = fault_line(error) if isinstance(error, Exception) else None
            if line and os.environ.get("PREFECT__FLOW_RUN_ID"):  # a worker's run: no CLI to say it
                raise RunFault(line) from error
            raise
        finally:
            _progress.reset(token)
            interrupts.disarm()  # the flow has ended: nothing left for a signal's alarm to stop

    return wrapper


def _write_failed(progress: dict, error: BaseException) -> None:
    run_dir = reports_dir() / progress["run"]["mlflow_run_id"]
    run_dir.mkdir(parents=True, exist_ok=True)
    existing = run_dir / "report.json"
    if existing.exists():
        result = json.loads(existing.read_text())
    else:  # what the run had found (partial), else its bare run block
        result = progress.get("result") or report.empty_report(progress["run"])
        if "data_dir" in result["run"]:  # no simulated labelers on a dataset (as own_data's report)
            result.pop("labelers", None)
    if progress.get("provenance") and not result.get("provenance"):
        result["provenance"] = progress["provenance"]
    result["status"] = "interrupted" if interrupts.is_interrupt(error) else "failed"
    result["stopped_at_stage"] = progress["stage"]
    result["error"] = error_text(error)
    report.write_whole(existing, json.dumps(result, indent=2) + "\n")
    report.write_whole(
        run_dir / "report.md",
        f"# instructflow run `{progress['run']['mlflow_run_id']}`: {result['status']}\n\n"
        f"Stopped at stage **{progress['stage']}**: `{result['error']}`\n",
    )
    _tag_parent_run(progress["run"]["mlflow_run_id"], result)
    _say_in_flow_run_log(result)


def _say_in_flow_run_log(result: dict) -> None:
    """A worker's run (a deployment's, from the Prefect UI) says where it stopped and why in
    its flow run's log, which is where its person looks: Prefect's own lines for a cancel
    read `Crash detected! Execution was aborted by an interrupt signal.` A command-line run
    says it on the console itself (cli_run). Best effort, as the tags."""
    if not os.environ.get("PREFECT__FLOW_RUN_ID"):  # set by the worker for the run's process
        return
    try:
        from prefect.logging import get_run_logger

        get_run_logger().error(
            "%s at stage %s: %s (report: %s)",
            result["status"],
            result["stopped_at_stage"],
            result["error"],
            reports_dir() / result["run"]["mlflow_run_id"] / "report.json",
        )
    except Exception:  # noqa: BLE001  (no run context or API: the run's own error is what to tell)
        pass


SIGTERM_TEXT = (
    "the run's process got SIGTERM: a cancel from Prefect (UI or CLI), or its worker or machine"
    " stopping. Finished stages and the training stages' checkpoints are kept: run it again to"
    " resume"
)


def error_text(error: BaseException) -> str:
    """`Type: message`, at most 500 characters; a signal without a message says what it was."""
    from prefect.exceptions import TerminationSignal

    message = str(error).strip()
    if not message and isinstance(error, TerminationSignal):
        message = (
            SIGTERM_TEXT  # Prefect raises it with no text (the report said "TerminationSignal:")
        )
    elif isinstance(error, KeyboardInterrupt) and interrupts.cancelled_worker_run():
        # A worker's run stopped by our handler ("stopped after step 67; checkpoint ..."):
        # the SIGTERM was a cancel (or its worker stopping), which the message alone hides.
        message = f"{message}; {SIGTERM_TEXT}" if message else SIGTERM_TEXT
    elif isinstance(error, Exception) and (fault := fault_line(error)):
        message = fault  # as the command line says it, not MLflow's 400-character exception
    elif not message and isinstance(error, KeyboardInterrupt):
        message = "stopped by SIGINT (Ctrl-C): run it again to resume"
    return f"{type(error).__name__}: {message}".strip()[:500]


def _tag_parent_run(run_id: str, result: dict) -> None:
    """The MLflow parent run says why it stopped, in its tags and its Overview (MLflow keeps
    only FAILED or KILLED). Best effort: the store may be what failed the run."""
    import mlflow

    if not mlflow.is_tracking_uri_set():  # not the pipeline's run (MLflow would make a store here)
        return
    why = f"{result['status']} at stage {result['stopped_at_stage']}: {result['error']}"
    try:
        client = mlflow.MlflowClient()
        client.set_tag(run_id, "failure_reason", result["error"])
        client.set_tag(run_id, "mlflow.note.content", why)
    except Exception:  # the run's own error is the one to tell
        pass
