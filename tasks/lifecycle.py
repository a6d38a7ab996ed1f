"""Start and end of a pipeline run: take this run's liveness lock, clear what killed runs left.

See instructflow.tasks.leftovers for why; this is the order the pipeline needs: lock
first (so a run starting at the same moment sees this one alive), then mark
dead runs KILLED, then make sure the registry's concurrency limit exists and
free the slot a dead run held (a training slot frees itself: it is a file lock).
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from mlflow import MlflowClient

from instructflow.tasks import leftovers, server_priority, tracking
from instructflow.tasks.concurrency import REGISTRY, ensure_limits


def start_run(experiment_id: str, logger, on_dataset: bool = False) -> dict[str, str]:
    """Register this run; return the MLflow tags that name it (host, project root, liveness token).
    `on_dataset`: a run on a user's dataset, whose stage runs are described so."""
    tracking.describe_stages_for_dataset(on_dataset)
    live = leftovers.register()
    for run_id, status in leftovers.reap_mlflow_runs(MlflowClient(), experiment_id).items():
        # its process is gone and it never closed its MLflow run: killed, or it lost the
        # tracking server and could not write its end
        logger.warning(
            "an earlier run (MLflow %s) had ended without closing its MLflow run (killed, or "
            "its tracking server was lost): marked %s",
            run_id,
            status if status == "KILLED" else f"{status} (its report says it completed)",
        )
    ensure_limits()
    for name in leftovers.free_orphaned_slots(live[leftovers.TAG_TOKEN], [REGISTRY]):
        logger.warning("freed the %s slot a killed run still held", name)
    for pid in leftovers.stop_orphaned_servers():
        logger.warning("stopped Prefect's temporary server (pid %s) a killed run left running", pid)
    server_priority.yield_to_training()  # this run's temporary server, if it started one
    return live | tracking.name_source(source_tag())  # the stage runs' Source too


def source_tag() -> dict[str, str]:
    """MLflow's Source of a deployment's run: the deployment, where it said `engine.py` (the
    module a worker starts); a run from the command line keeps `instructflow`."""
    from prefect.runtime import deployment

    try:
        name = deployment.name  # None outside a deployment's run
    except Exception:  # noqa: BLE001  (the API away: the Source stays MLflow's own)
        return {}
    return {"mlflow.source.name": f"Prefect deployment {name}"} if name else {}


@contextmanager
def ended(live: dict[str, str]) -> Iterator[Callable[[str], None]]:
    """Release this run's liveness lock however the block ends, and take its token off the
    MLflow run that the block names by calling what it yields with the run's id:
    bookkeeping no one reads once the run has ended. A store that cannot be reached
    leaves the token: a later run's reaper takes it off instead."""
    token = live[leftovers.TAG_TOKEN]
    tagged: list[str] = []
    try:
        yield tagged.append
    finally:
        try:
            # The run is known: deleting on its id spares a search of the experiment at
            # every run's end (runs reaped later have theirs from the reaper's search).
            client = MlflowClient()
            for run_id in tagged:
                client.delete_tag(run_id, leftovers.TAG_TOKEN)
        except Exception:  # noqa: BLE001  (never hide how the run ended behind this)
            pass
        leftovers.unregister(token)
        # A stage run this process starts later (a test's, an evaluation's) is no stage of
        # this run: it is not described as one on its dataset.
        tracking.describe_stages_for_dataset(False)
