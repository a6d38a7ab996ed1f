"""MLflow conventions of the project: where runs go, how stages nest, what is tagged.

By default the tracking store is SQLite under mlflow/ with artifacts beside
it; MLFLOW_TRACKING_URI points runs anywhere else (a shared server). One
parent run per pipeline run, one nested run per stage.
"""

import atexit
import os
import re
import sqlite3
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import mlflow
import mlflow.data
from mlflow.tracking import MlflowClient
from sqlalchemy import event
from sqlalchemy.engine import Engine

from instructflow.tasks import outages
from instructflow.tasks.batched_log import BatchedLog
from instructflow.tasks.paths import mlflow_dir
from instructflow.tasks.progress import Progress
from instructflow.tasks.stage import mark_done
from instructflow.tasks.stage_notes import with_stage_note
from instructflow.tasks.storage_faults import is_storage_fault

EXPERIMENT = "instructflow"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{mlflow_dir() / 'mlflow.db'}"


# Tracking URI -> experiment id, for the stages after the first in this process: each
# lookup is two queries (tens of ms on SQLite), once per stage run otherwise. A store
# deleted under a running process is beyond this cache anyway: MLflow's pooled SQLite
# connections keep writing to the deleted file ("attempt to write a readonly database").
_experiment_ids: dict[str, str] = {}


def _sqlite_store_settings(dbapi_connection, _record) -> None:
    """Write-ahead logging for a SQLite store: `make serve`'s UI reads while a run writes
    (a rollback journal makes each wait for the other), and a commit appends to the log
    with no sync of the database file (a power cut may lose the last commits, never the
    database); together a third less time per MLflow write, which a stage makes ~10 of."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


_folded_at_exit: set[str] = set()  # SQLite stores whose log this process folds when it ends


def fold_write_ahead_log(database: Path) -> None:
    """Copy the write-ahead log's commits into the database file and empty the log.

    MLflow keeps its pooled connections open until the process ends, and they are
    never closed (SQLite folds the log back when the last one closes): the log held
    the newest runs, so a copy of mlflow.db alone (a backup, a move) lacked them.
    A reader that holds the log (`make serve`'s UI mid-query) makes this wait up
    to 2 s and then give up, leaving the log for the next run to fold.
    """
    if not database.is_file():
        return
    try:
        with closing(sqlite3.connect(database, timeout=2.0)) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error:
        pass


# MLflow 3's UI lays an experiment out by this tag; without it, it guessed GenAI (traces,
# judges, prompts, "Evaluations") for a pipeline that trains models and has no traces.
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"


def _remove_half_made_store(database: Path) -> None:
    """Remove a SQLite store whose creation a full disk stopped: MLflow had made some of its
    tables, and the next command, told to run again once there is space, failed on them
    (`table assessments already exists`, a traceback) however much space there was. A
    store this process was creating holds no run yet."""
    for path in (database, *(database.with_name(database.name + e) for e in ("-wal", "-shm"))):
        path.unlink(missing_ok=True)


def setup() -> str:
    """Point MLflow at the project's store and make sure the experiment exists; return its id."""
    uri = tracking_uri()
    if uri.startswith("sqlite:") and not event.contains(Engine, "connect", _sqlite_store_settings):
        event.listen(Engine, "connect", _sqlite_store_settings)  # before MLflow's first connection
    if uri.startswith("sqlite:") and uri not in _folded_at_exit:
        _folded_at_exit.add(uri)
        atexit.register(fold_write_ahead_log, Path(uri.removeprefix("sqlite:///")))
    mlflow.set_tracking_uri(uri)
    if uri in _experiment_ids:
        return _experiment_ids[uri]
    mlflow_dir().mkdir(parents=True, exist_ok=True)
    database = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:") else None
    new_store = database is not None and not database.exists()
    try:
        client = MlflowClient()
        experiment = client.get_experiment_by_name(EXPERIMENT)
    except Exception as error:
        if new_store and is_storage_fault(error):
            _remove_half_made_store(database)
        raise
    if experiment is not None:
        experiment_id = experiment.experiment_id
        if experiment.tags.get(EXPERIMENT_KIND) != MODEL_TRAINING:  # made by an older version
            client.set_experiment_tag(experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
    else:
        # A file store keeps artifacts where the URI says; with SQLite they must
        # be placed explicitly, or MLflow writes ./mlruns in whatever the cwd is.
        location = None
        if tracking_uri().startswith("sqlite:"):
            location = (mlflow_dir() / "artifacts").as_uri()
        experiment_id = client.create_experiment(
            EXPERIMENT, artifact_location=location, tags={EXPERIMENT_KIND: MODEL_TRAINING}
        )
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


# The Source the pipeline's parent run shows (lifecycle.source_tag: a deployment's run names
# its deployment, where MLflow wrote `engine.py`, the module a worker starts), for its stage
# runs too: they start in the same process, some in another thread (no active run there).
_source: dict[str, str] = {}


def name_source(tags: dict[str, str]) -> dict[str, str]:
    """Give this process's stage runs the parent run's Source tag (`{}`: MLflow's own); returns it."""
    _source.clear()
    _source.update(tags)
    return tags


# Whether this process's pipeline run is on a user's dataset, whose stage runs are
# described as such (stage_notes.DATASET_STAGE_NOTES); set, like the Source, per run.
_on_dataset = [False]


def describe_stages_for_dataset(on_dataset: bool) -> None:
    """Describe this process's stage runs from now on as those of a run on a user's dataset
    (or, False, of the embedded world)."""
    _on_dataset[0] = on_dataset


@contextmanager
def stage_run(
    stage: str, parent_run_id: str | None, tags: dict[str, str] | None = None
) -> Iterator[mlflow.ActiveRun]:
    """A nested MLflow run for one stage under the pipeline's parent run.

    The parent is named explicitly: a stage may run in another thread (the
    second lane of stages side by side), where MLflow's thread-local active run
    is not visible. Where it is (the flow's own thread), MLflow nests under it
    without reading the parent back from the store, a query per stage.

    A tracking server that does not answer (restarted between two stages) is waited for
    first (outages.wait_until_answering), as at a stage's end (BatchedLog).
    """
    why = f"stage {stage} starts its run there"
    outages.wait_if_not_answering("the MLflow tracking server", tracking_uri(), why)
    experiment_id = setup()
    active = mlflow.active_run()
    parent_is_active = active is not None and active.info.run_id == parent_run_id
    with (
        mlflow.start_run(
            experiment_id=experiment_id,
            run_name=stage,
            nested=parent_run_id is not None,
            parent_run_id=None if parent_is_active else parent_run_id,
            # its Overview says what the stage does and what its metrics are
            tags=with_stage_note(
                stage, {"stage": stage, **_source, **(tags or {})}, _on_dataset[0]
            ),
        ) as run,
        closing_run(),
    ):
        yield run


def cached_stage_tags(key: str, source_run_id: str) -> dict[str, str]:
    """The tags of a stage's run when Prefect's cache served the stage: what it is, and, as
    the run's description (its Overview), which run computed it, linked: the curves,
    parameters and models are there, this run holds only the final metrics."""
    from instructflow.tasks.env import mlflow_run_url

    source = (
        f"[`{source_run_id}`]({mlflow_run_url(setup(), source_run_id)})"
        if source_run_id
        else "an earlier run"
    )
    note = (
        f"This stage was served from Prefect's cache (key `{key}`), not run again. "
        f"It was computed by {source}: its training curves, parameters and artifacts are "
        "there; this run repeats only its final metrics."
    )
    return {
        "cached": "true",
        "cached_from_run_id": source_run_id,
        "cache_key": key,
        "mlflow.note.content": note,
    }


@contextmanager
def closing_run() -> Iterator[None]:
    """The end of the active run's block: what waits for it (BatchedLog) is written however
    the block ends, and a signal (a KeyboardInterrupt) ends the run KILLED, not FAILED."""
    from instructflow.tasks.interrupts import is_interrupt

    run_id = mlflow.active_run().info.run_id
    try:
        yield
    except BaseException as error:
        # A failed run's figures up to the failure are worth having, but not worth hiding
        # the failure behind an error of the store's.
        batched.flush(run_id, quiet=True, closing=True)
        active = mlflow.active_run()  # a stage's own end may have ended it: its parent's now
        if is_interrupt(error) and active and active.info.run_id == run_id:
            mlflow.end_run("KILLED")
        raise
    batched.flush(run_id, closing=True)


def end_finished_run(run_id: str) -> None:
    """End the stage's active run FINISHED now, before its stage is marked done, so that a
    stage marked done always has a finished run. A server lost after the stage's last write
    is waited for (outages.wait_until_answering) and the end tried again; still lost, the
    stage fails unmarked and its retry resumes from its checkpoints instead of wiping a
    folder marked done."""
    active = mlflow.active_run()
    try:
        if active is not None and active.info.run_id == run_id:
            mlflow.end_run()  # off the thread's stack too, so its block's end does not end it
        else:  # a run of another thread's context: its stack is not ours to pop
            MlflowClient().set_terminated(run_id)
    except Exception as error:
        if not outages.lost_service_message(error, tracking_uri()):
            raise
        why = "the stage's work is done and waits for its run to be ended there"
        outages.wait_until_answering("the MLflow tracking server", tracking_uri(), why)
        MlflowClient().set_terminated(run_id)  # MLflow took it off the stack before it failed


def end_unfinished_run(run_id: str, error: BaseException) -> None:
    """A run ended FINISHED whose stage then failed to be marked done (a full disk): FAILED
    (KILLED for a signal) after all, if the store takes it; the stage's own error is what
    the caller raises."""
    from instructflow.tasks.interrupts import is_interrupt

    try:
        MlflowClient().set_terminated(run_id, "KILLED" if is_interrupt(error) else "FAILED")
    except Exception as store_error:
        print(f"warning: run {run_id} stays FINISHED in MLflow: {store_error}", flush=True)


def finish_stage(out: Path, run_id: str, result: dict) -> dict:
    """End the stage's active run FINISHED (a lost server waited for), then mark the stage
    done with `result`; a marker that cannot be written leaves the run FAILED (KILLED for a
    signal), so a FINISHED run and a done stage go together."""
    end_finished_run(run_id)
    try:
        return mark_done(out, result)
    except BaseException as error:
        end_unfinished_run(run_id, error)
        raise


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v is not None and v == v}  # drop NaN


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    # Synchronous: MLflow's asynchronous queue joins its thread when a run ends, which
    # cost about 0.3 s per stage (profiled), more than the writes it saves.
    clean = _finite(metrics)
    if clean:
        mlflow.log_metrics(clean, step=step)


batched = BatchedLog()


def log_stage_seconds(run_id: str, stage: str, seconds: float) -> None:
    """`stage_seconds/<stage>` on the pipeline's parent run, written when its block ends
    (closing_run), after the figures a person opens the run for: MLflow's Overview lists
    metrics in the order they were first logged. A kill -9 loses them there (each stage's
    own run keeps its start and end); the report has them too."""
    batched.add_closing_metrics(run_id, {f"stage_seconds/{stage}": seconds})


def log_final_metrics(run_id: str, metrics: dict[str, float]) -> None:
    """A stage's result figures, written now with whatever else its run has waiting."""
    batched.add_metrics(run_id, _finite(metrics))
    batched.flush(run_id)


def log_step_metrics(metrics: dict[str, float], step: int) -> None:
    """`metrics` of one training step, for the active run (written in batches: BatchedLog)."""
    clean = _finite(metrics)
    run = mlflow.active_run()
    if run is None:  # no stage run (a model function called outside a stage): as before
        log_metrics(clean, step=step)
    elif clean:
        batched.add_metrics(run.info.run_id, clean, step)


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


def log_tables(tables: list[tuple]) -> None:
    """Tables the stage read or wrote, (frame, source path, name, digest or None, context)
    each, as MLflow dataset inputs of the active run (in one write)."""
    with warnings.catch_warnings():
        # MLflow registers its local-file source class twice and warns, for every local
        # path, that the source "can be interpreted in multiple ways" (both the same class).
        warnings.filterwarnings("ignore", message="The specified dataset source can be")
        datasets = [
            mlflow.data.from_pandas(frame, source=str(source), name=name, digest=digest)
            for frame, source, name, digest, _ in tables
        ]
    contexts = [table[4] for table in tables]
    mlflow.log_inputs(datasets, contexts=contexts, tags_list=[None] * len(tables))


def log_data_version(name: str, folder: Path, md5: str) -> None:
    """The data the run reads, as the active run's MLflow dataset input: its folder and its DVC
    md5 (no copy of the rows), shown in the runs table's Dataset column."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():  # as in log_tables
        warnings.filterwarnings("ignore", message="The specified dataset source can be")
        source = resolve_dataset_source(str(folder))
    # MLflow's digest column holds 36 characters: a DVC folder md5 with its ".dir" fits.
    digest = md5 if re.fullmatch(r"[0-9a-f]{32}(\.dir)?", md5) else "untracked by DVC"
    mlflow.log_input(MetaDataset(source, name=name, digest=digest), context="training")
