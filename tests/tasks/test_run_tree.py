"""A stopped sweep ends the runs its killed seeds left RUNNING (run_tree.end_running_below)."""

from mlflow import MlflowClient

from instructflow.tasks import tracking
from instructflow.tasks.run_tree import end_running_below


def test_every_running_run_below_the_sweep_ends_killed_and_nothing_else_changes(
    monkeypatch, tmp_path
):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(tmp_path))
    client = MlflowClient(uri)
    experiment = tracking.setup()

    def run(parent=None, status="RUNNING") -> str:
        tags = {"mlflow.parentRunId": parent} if parent else {}
        run_id = client.create_run(experiment, tags=tags).info.run_id
        if status != "RUNNING":
            client.set_terminated(run_id, status)
        return run_id

    # a sweep (still running: it ends itself), a seed that ended KILLED with a stage left
    # RUNNING under it (SIGKILLed before its handler closed it), a seed left RUNNING with
    # a finished stage, and a run of another sweep
    sweep = run()
    seed_0 = run(sweep, "KILLED")
    stage_0 = run(seed_0)
    seed_1 = run(sweep)
    stage_1 = run(seed_1, "FINISHED")
    other = run(run())

    ended = end_running_below(client, sweep)

    assert sorted(ended) == sorted([stage_0, seed_1])
    status = {
        r: client.get_run(r).info.status for r in (sweep, seed_0, stage_0, seed_1, stage_1, other)
    }
    assert status == {
        sweep: "RUNNING",
        seed_0: "KILLED",
        stage_0: "KILLED",
        seed_1: "KILLED",
        stage_1: "FINISHED",
        other: "RUNNING",
    }
