"""Stages side by side (flows/stages.py Stages.side_by_side): a 2-thread smoke run with lanes on.

FLAN -> T0 -> PPO train while SFT -> comparisons -> RM -> judge -> PPO-ptx
do (PPO after the RM); each second-lane stage in a process of its own. The smoke profile leaves lanes off unless asked (its stages are shorter
than a process's start-up): this run asks.
"""

import pytest
from mlflow.tracking import MlflowClient

from instructflow.flows.params import PipelineParams
from instructflow.tasks import concurrency, tracking

pytestmark = pytest.mark.slow


def _interval(run) -> tuple[int, int]:
    return run.info.start_time, run.info.end_time


def _overlap(a, b) -> bool:
    (start_a, end_a), (start_b, end_b) = _interval(a), _interval(b)
    return start_a < end_b and start_b < end_a


def test_independent_stages_run_at_the_same_time(
    prefect_harness, make_project, fast_smoke, monkeypatch
):
    from instructflow.flows.pipeline import rlhf_pipeline

    # given a fresh project and a 2-thread smoke run with stages side by side, on the reduced
    # smoke sizes (what is tested is the lanes' schedule, not what the stages learn)
    root = make_project()
    uri = f"sqlite:///{root / 'mlflow.db'}"
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    result = rlhf_pipeline(PipelineParams(**fast_smoke(threads=2, side_by_side=True)))
    # then it completed with every policy evaluated and every stage timed
    assert result["status"] == "completed"
    assert len(result["policies"]) == 7
    assert {"flan", "t0", "sft", "reward_model", "judge", "ppo", "ppo_ptx"} <= set(
        result["run"]["stage_seconds"]
    )
    # and the second lane overlapped the first: a baseline beside the SFT -> RM chain;
    # and PPO, in the second lane, waited for the first lane's RM
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id
    parent = result["run"]["mlflow_run_id"]
    stage = {
        r.data.tags["stage"]: r
        for r in client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")
    }
    chain = [stage[name] for name in ("sft", "comparisons", "reward_model", "judge")]
    assert any(_overlap(stage[b], c) for b in ("flan", "t0") for c in chain)
    assert stage["ppo"].info.start_time >= stage["reward_model"].info.end_time
    # and the evaluation judged the policies in two lanes too
    assert stage["evaluation"].data.params["lanes"] == "2"
    # and a stage trained in its own process logged its steps to its own MLflow run
    assert client.get_metric_history(stage["flan"].info.run_id, "flan/train_loss")
    # and no training slot is left held
    assert not concurrency.training_slot_taken()
