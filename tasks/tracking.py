"""MLflow conventions of the project: where runs go, how stages nest, what is tagged.

By default the tracking store is SQLite under mlflow/ with artifacts beside
it; MLFLOW_TRACKING_URI points runs anywhere else (a shared server). One
parent run per pipeline run, one nested run per stage.
"""

import os
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import mlflow.data
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from instructflow.tasks.paths import mlflow_dir
from instructflow.tasks.progress import Progress

EXPERIMENT = "instructflow"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{mlflow_dir() / 'mlflow.db'}"


# Tracking URI -> experiment id, for the stages after the first in this process: each
# lookup is two queries (tens of ms on SQLite), once per stage run otherwise. A store
# deleted under a running process is beyond this cache anyway: MLflow's pooled SQLite
# connections keep writing to the deleted file ("attempt to write a readonly database").
_experiment_ids: dict[str, str] = {}


def setup() -> str:
    """Point MLflow at the project's store and make sure the experiment exists; return its id."""
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    if uri in _experiment_ids:
        return _experiment_ids[uri]
    mlflow_dir().mkdir(parents=True, exist_ok=True)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        experiment_id = experiment.experiment_id
    else:
        # A file store keeps artifacts where the URI says; with SQLite they must
        # be placed explicitly, or MLflow writes ./mlruns in whatever the cwd is.
        location = None
        if tracking_uri().startswith("sqlite:"):
            location = (mlflow_dir() / "artifacts").as_uri()
        experiment_id = client.create_experiment(EXPERIMENT, artifact_location=location)
    mlflow.set_experiment(experiment_id=experiment_id)
    _experiment_ids[uri] = experiment_id
    return experiment_id


def git_commit(root: Path | None = None) -> str:
    """The commit of the code that runs (not of the data's project root), '+dirty' with local changes."""
    root = root or Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


@contextmanager
def stage_run(
    stage: str, parent_run_id: str | None, tags: dict[str, str] | None = None
) -> Iterator[mlflow.ActiveRun]:
    """A nested MLflow run for one stage under the pipeline's parent run.

    The parent is named explicitly: Prefect may run a task in another thread,
    where MLflow's thread-local active run is not visible.
    """
    experiment_id = setup()
    with (
        mlflow.start_run(
            experiment_id=experiment_id,
            run_name=stage,
            nested=parent_run_id is not None,
            parent_run_id=parent_run_id,
            tags={"stage": stage, **(tags or {})},
        ) as run,
        killed_on_interrupt(),
    ):
        try:
            yield run
        except BaseException:
            # A failed stage's curve up to the failure is worth having, but not worth
            # hiding the failure behind an error of the store's.
            step_metrics.flush(run.info.run_id, quiet=True)
            raise
        step_metrics.flush(run.info.run_id)


@contextmanager
def killed_on_interrupt() -> Iterator[None]:
    """End the active run KILLED, not FAILED, when a signal (a KeyboardInterrupt) stops it."""
    from prefect.exceptions import TerminationSignal  # Prefect's SIGTERM in a worker's flow run

    try:
        yield
    except (KeyboardInterrupt, TerminationSignal):
        if mlflow.active_run() is not None:
            mlflow.end_run("KILLED")
        raise


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    # Synchronous: MLflow's asynchronous queue joins its thread when a run ends, which
    # cost about 0.3 s per stage (profiled), more than the writes it saves.
    clean = {k: float(v) for k, v in metrics.items() if v is not None and v == v}  # drop NaN
    if clean:
        mlflow.log_metrics(clean, step=step)


class StepMetrics:
    """Training curves, written to MLflow in batches rather than one write per step.

    Each write to the store costs several milliseconds of the training loop's
    own time (SQLite: a transaction); a stage logs tens to hundreds of steps.
    A run's steps are written at most FLUSH_SECONDS after they were logged (so
    MLflow's charts follow a long stage as it runs) and when its stage run
    ends, each with the time it was logged.
    """

    FLUSH_SECONDS = 5.0
    BATCH = 1000  # MLflow's limit of metrics in one log_batch

    def __init__(self) -> None:
        self._pending: dict[str, list[Metric]] = {}  # run id -> steps not yet written
        self._oldest: dict[str, float] = {}  # run id -> when its oldest pending step came
        self._lock = threading.Lock()  # stages of two lanes log from two threads

    def add(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        stamp = int(time.time() * 1000)
        with self._lock:
            pending = self._pending.setdefault(run_id, [])
            pending += [Metric(k, v, stamp, step) for k, v in metrics.items()]
            oldest = self._oldest.setdefault(run_id, time.monotonic())
        if time.monotonic() - oldest >= self.FLUSH_SECONDS:
            self.flush(run_id)

    def flush(self, run_id: str, quiet: bool = False) -> None:
        """Write `run_id`'s pending steps; `quiet`: drop them if the store refuses."""
        with self._lock:
            pending = self._pending.pop(run_id, [])
            self._oldest.pop(run_id, None)
        try:
            for start in range(0, len(pending), self.BATCH):
                MlflowClient().log_batch(run_id, metrics=pending[start : start + self.BATCH])
        except Exception:
            if not quiet:
                raise


step_metrics = StepMetrics()


def log_step_metrics(metrics: dict[str, float], step: int) -> None:
    """`metrics` of one training step, for the active run (written in batches: StepMetrics)."""
    clean = {k: float(v) for k, v in metrics.items() if v is not None and v == v}  # drop NaN
    run = mlflow.active_run()
    if run is None:  # no stage run (a model function called outside a stage): as before
        log_metrics(clean, step=step)
    elif clean:
        step_metrics.add(run.info.run_id, clean, step)


def metric_logger(prefix: str):
    """A callback for training loops: log_fn(step, {"loss": ...}, total, unit) -> MLflow
    `prefix/loss` at `step`, and a console line with the progress (tasks/progress.py)."""
    progress = Progress(prefix)

    def log(
        step: int, metrics: dict[str, float], total: int | None = None, unit: str = "step"
    ) -> None:
        log_step_metrics({f"{prefix}/{k}": v for k, v in metrics.items()}, step)
        print(progress.line(step, metrics, total, unit), flush=True)

    return log


def log_table(frame, source: Path, name: str, context: str, digest: str | None = None) -> None:
    """A table the stage read or wrote, as an MLflow dataset input of the active run."""
    with warnings.catch_warnings():
        # MLflow registers its local-file source class twice and warns, for every local
        # path, that the source "can be interpreted in multiple ways" (both the same class).
        warnings.filterwarnings("ignore", message="The specified dataset source can be")
        dataset = mlflow.data.from_pandas(frame, source=str(source), name=name, digest=digest)
    mlflow.log_input(dataset, context=context)
