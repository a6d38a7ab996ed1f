"""Training curves go to MLflow in batches: every step arrives, with its step and time, by the
time the stage's run ends, whether the stage finished or failed."""

import time

import pytest
from mlflow import MlflowClient

from instructflow.tasks import tracking
from tests.conftest import use_project


@pytest.fixture
def store(tmp_path, monkeypatch) -> MlflowClient:
    use_project(monkeypatch, tmp_path)
    return MlflowClient(tracking.tracking_uri())


def _curve(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def test_steps_wait_for_the_batch_and_all_arrive_when_the_stage_run_ends(store, monkeypatch):
    monkeypatch.setattr(tracking.BatchedLog, "FLUSH_SECONDS", 3600.0)
    log = tracking.metric_logger("sft")
    with tracking.stage_run("sft", None) as run:
        for step in range(5):
            log(step, {"loss": 1.0 / (step + 1), "lr": float("nan")})
        assert _curve(store, run.info.run_id, "sft/loss") == []  # not written step by step
    assert _curve(store, run.info.run_id, "sft/loss") == [
        (0, 1.0), (1, 0.5), (2, 1 / 3), (3, 0.25), (4, 0.2)
    ]  # fmt: skip
    assert _curve(store, run.info.run_id, "sft/lr") == []  # NaN is left out, as before


def test_each_step_keeps_the_time_it_was_logged(store, monkeypatch):
    monkeypatch.setattr(tracking.BatchedLog, "FLUSH_SECONDS", 3600.0)
    with tracking.stage_run("rm", None) as run:
        before = time.time() * 1000
        tracking.log_step_metrics({"loss": 1.0}, 0)
        time.sleep(0.05)
        tracking.log_step_metrics({"loss": 2.0}, 1)
    first, second = store.get_metric_history(run.info.run_id, "loss")
    assert before - 1 <= first.timestamp and second.timestamp - first.timestamp >= 40


def test_a_long_stage_writes_its_steps_as_it_goes(store, monkeypatch):
    monkeypatch.setattr(tracking.BatchedLog, "FLUSH_SECONDS", 0.0)  # every step is "old"
    with tracking.stage_run("ppo", None) as run:
        tracking.log_step_metrics({"ppo/kl": 0.1}, 0)
        assert _curve(store, run.info.run_id, "ppo/kl") == [(0, 0.1)]


def test_a_failed_stage_keeps_its_curve_and_its_own_error(store, monkeypatch):
    monkeypatch.setattr(tracking.BatchedLog, "FLUSH_SECONDS", 3600.0)
    with pytest.raises(ValueError, match="diverged"):
        with tracking.stage_run("sft", None) as run:
            tracking.log_step_metrics({"loss": 3.0}, 0)
            raise ValueError("diverged")
    assert _curve(store, run.info.run_id, "loss") == [(0, 3.0)]
    assert store.get_run(run.info.run_id).info.status == "FAILED"


def test_a_store_error_while_failing_does_not_hide_the_stage_error(store, monkeypatch):
    monkeypatch.setattr(tracking.BatchedLog, "FLUSH_SECONDS", 3600.0)

    def refuse(*_args, **_kwargs):
        raise OSError("disk full")

    with pytest.raises(ValueError, match="diverged"):
        with tracking.stage_run("sft", None):
            tracking.log_step_metrics({"loss": 3.0}, 0)
            monkeypatch.setattr(MlflowClient, "log_batch", refuse)
            raise ValueError("diverged")


def test_more_than_one_batch_holds_arrives_in_several(store, monkeypatch):
    from instructflow.tasks import batched_log

    monkeypatch.setattr(tracking.BatchedLog, "FLUSH_SECONDS", 3600.0)
    monkeypatch.setattr(batched_log, "MAX_PARAMS", 2)
    monkeypatch.setattr(batched_log, "MAX_ENTRIES", 4)
    calls = []
    real = MlflowClient.log_batch

    def counted(self, run_id, metrics=(), params=(), **kwargs):
        calls.append((len(params), len(metrics)))
        return real(self, run_id, metrics=metrics, params=params, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", counted)
    with tracking.stage_run("pretrain", None) as run:
        tracking.batched.add_params(run.info.run_id, {"a": 1, "b": 2.5, "c": None})
        for step in range(5):
            tracking.log_step_metrics({"loss": float(step)}, step)
    # 3 params and 5 steps, at most 2 params and 4 entries a batch: 2+2, 1+3, 0+0 left
    assert calls == [(2, 2), (1, 3)]
    assert _curve(store, run.info.run_id, "loss") == [(s, float(s)) for s in range(5)]
    assert store.get_run(run.info.run_id).data.params == {"a": "1", "b": "2.5", "c": "None"}


def test_a_tracked_stage_writes_settings_curve_and_figures_before_it_is_marked_done(
    store, tmp_path, monkeypatch
):
    from instructflow.tasks.stage import DONE_MARKER
    from instructflow.tasks.tracked import tracked_stage

    monkeypatch.setattr(tracking.BatchedLog, "FLUSH_SECONDS", 3600.0)
    seen_at_done = {}
    real_flush = tracking.batched.flush

    def flush_then_look(run_id, quiet=False, closing=False):
        real_flush(run_id, quiet, closing)
        if not (tmp_path / "out" / DONE_MARKER).exists():
            seen_at_done.update(store.get_run(run_id).data.params)

    monkeypatch.setattr(tracking.batched, "flush", flush_then_look)
    with tracked_stage("judge", tmp_path / "out", None, {"lr": 0.001}) as stage:
        tracking.log_step_metrics({"judge/loss": 0.7}, 0)
        result = stage.done({"judge/accuracy": 0.61})
    run = store.get_run(result["mlflow_run_id"])
    assert seen_at_done == {"lr": "0.001"}  # written before DONE.json
    assert run.data.metrics == {"judge/loss": 0.7, "judge/accuracy": 0.61}
    assert _curve(store, run.info.run_id, "judge/loss") == [(0, 0.7)]


def test_a_parent_runs_waiting_figures_are_written_when_its_block_ends(store, monkeypatch):
    import mlflow

    monkeypatch.setattr(tracking.BatchedLog, "FLUSH_SECONDS", 3600.0)
    tracking.setup()
    with mlflow.start_run() as parent, tracking.closing_run():
        tracking.batched.add_metrics(parent.info.run_id, {"stage_seconds/sft": 1.5})
        assert store.get_run(parent.info.run_id).data.metrics == {}
    assert store.get_run(parent.info.run_id).data.metrics == {"stage_seconds/sft": 1.5}


def test_an_interrupted_run_ends_killed_with_its_figures(store, monkeypatch):
    import mlflow

    monkeypatch.setattr(tracking.BatchedLog, "FLUSH_SECONDS", 3600.0)
    tracking.setup()
    with pytest.raises(KeyboardInterrupt):
        with mlflow.start_run() as parent, tracking.closing_run():
            tracking.batched.add_metrics(parent.info.run_id, {"stage_seconds/sft": 1.5})
            raise KeyboardInterrupt
    run = store.get_run(parent.info.run_id)
    assert run.info.status == "KILLED" and run.data.metrics == {"stage_seconds/sft": 1.5}


def test_a_parent_runs_headline_figures_are_listed_before_its_stage_seconds(store):
    import mlflow

    tracking.setup()
    # given a pipeline's parent run: each stage's seconds as it ends, the figures at the end
    with mlflow.start_run() as parent, tracking.closing_run():
        run_id = parent.info.run_id
        tracking.log_stage_seconds(run_id, "sft", 1.5)
        tracking.batched.flush(run_id)  # what a later stage's log does FLUSH_SECONDS on
        tracking.log_stage_seconds(run_id, "evaluate", 2.0)
        tracking.log_final_metrics(run_id, {"eval/sft/gold": 0.5, "judge/accuracy": 0.7})
        tracking.log_stage_seconds(run_id, "registry", 0.25)
    # then the store gives the figures first: MLflow's run Overview lists metrics in the order
    # the store returns them (each key where it was first logged), not sorted by key
    assert list(store.get_run(run_id).data.metrics) == [
        "eval/sft/gold",
        "judge/accuracy",
        "stage_seconds/sft",
        "stage_seconds/evaluate",
        "stage_seconds/registry",
    ]
