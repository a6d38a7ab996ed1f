"""The MLflow runs below a run, at any depth, that its stopped process left RUNNING.

A run's children name it in the tag `mlflow.parentRunId`: a pipeline run's
stages are its children, a sweep's seeds its children and their stages its
grandchildren. Whoever finds the top of such a tree stopped (a sweep once its
seeds' processes are gone: flows/sweep_stop.py; a later run that finds a dead
run's parent: tasks/leftovers.py) ends every run below it still RUNNING, so
that none looks alive in the MLflow UI for good.
"""

from mlflow import MlflowClient


def end_running_below(client: MlflowClient, run_id: str, status: str = "KILLED") -> list[str]:
    """End with `status` every run under `run_id` (its children, theirs, ...) still RUNNING,
    `run_id` itself left as it is; the ids it ended."""
    experiment = client.get_run(run_id).info.experiment_id
    parents: dict[str, str | None] = {}

    def parent_of(run) -> str | None:
        parents[run.info.run_id] = run.data.tags.get("mlflow.parentRunId")
        return parents[run.info.run_id]

    def is_below(run) -> bool:
        parent = parent_of(run)
        while parent is not None and parent != run_id:
            parent = parents[parent] if parent in parents else parent_of(client.get_run(parent))
        return parent == run_id

    running = client.search_runs([experiment], "attributes.status = 'RUNNING'")
    ended = [run.info.run_id for run in running if is_below(run)]
    for unfinished in ended:
        client.set_terminated(unfinished, status)
    return ended
