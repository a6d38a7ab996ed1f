"""Two pipeline runs at once on the live stack: both finish, training takes turns, the registry stays consistent.

The two runs are started together on the stack of test_e2e_servers (one
worker, which runs both at the same time): a run of the scheduled-retrain
deployment (its cron run, started early, with the reduced smoke sizes and
seed 2) overlapping a Custom Run of manual-run (seed 1, the e2e run's
parameters but the reward model's learning rate). Each re-trains the reward
model and re-runs what follows; the seed-2 run trains everything. The one
training slot (a file lock under runs/) must make the trainings take turns,
and the registry's global concurrency limit (one slot) the two promotion
gates judge one after the other, each against the champion the
other left.
"""

from datetime import datetime

import pytest
from mlflow import MlflowClient

from instructflow.tasks import concurrency, registry, tracking
from tests.flows.contract import SMOKE_POLICY, SMOKE_REWARD_MODEL

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_runs(live_stack, live_manual_run, fast_smoke) -> dict:
    """Both flow runs (after the e2e run, whose stages they reuse), by id."""
    assert live_manual_run["flow_run"]["state"]["type"] == "COMPLETED", live_stack.logs(
        live_manual_run["id"]
    )
    ids = [
        live_stack.run_deployment(
            "rlhf_pipeline/scheduled-retrain", {"params": fast_smoke(seed=2)}
        ),
        live_stack.run_deployment(
            "rlhf_pipeline/manual-run", {"params": fast_smoke(seed=1, reward_model={"lr": 6e-4})}
        ),
    ]
    return {run_id: live_stack.wait(run_id, timeout=900) for run_id in ids}


def _interval(flow_run: dict) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(flow_run["start_time"]), datetime.fromisoformat(
        flow_run["end_time"]
    )


def test_both_runs_finish_and_overlapped(live_stack, two_runs):
    # given two Custom Runs started together
    for run_id, flow_run in two_runs.items():
        # then both completed
        assert flow_run["state"]["type"] == "COMPLETED", live_stack.logs(run_id)
    # and they did run at the same time
    (start_a, end_a), (start_b, end_b) = (_interval(r) for r in two_runs.values())
    assert start_a < end_b and start_b < end_a


def _stage_run(client: MlflowClient, flow_run_id: str, stage: str):
    """The nested MLflow run of `stage` under the parent run of a Prefect flow run."""
    experiment_id = client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id
    (parent,) = [
        r
        for r in client.search_runs(
            [experiment_id], filter_string=f"tags.prefect_flow_run_id = '{flow_run_id}'"
        )
        if "mlflow.parentRunId" not in r.data.tags
    ]
    (run,) = client.search_runs(
        [experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.stage = '{stage}'",
    )
    return run


def test_training_stages_took_turns(live_stack, two_runs):
    client = MlflowClient(tracking_uri=live_stack.mlflow_url)
    # given each run's reward-model stage, trained (its config changed), not cached
    stage_runs = [_stage_run(client, run_id, "reward_model") for run_id in two_runs]
    assert all(r.data.tags.get("cached") != "true" for r in stage_runs)
    # then the two trainings did not overlap: one training slot
    (_, end_first), (start_second, _) = sorted(
        (r.info.start_time, r.info.end_time) for r in stage_runs
    )
    assert end_first <= start_second


def test_registry_stays_consistent(live_stack, live_manual_run, two_runs):
    client = MlflowClient(tracking_uri=live_stack.mlflow_url)
    versions = sorted(
        client.search_model_versions(f"name = '{SMOKE_POLICY}'"),
        key=lambda v: int(v.version),
    )
    # given the policy versions registered by the e2e run and the two concurrent runs
    by_run = {v.tags.get("prefect_flow_run_id"): v for v in versions}
    assert set(by_run) >= {live_manual_run["id"], *two_runs}
    # then each run registered exactly one version, and every version records a gate decision
    assert len(versions) == len(by_run)
    assert all(
        v.tags.get("gate_promote") in {"True", "False"} and v.tags.get("gate_reason")
        for v in versions
    )
    # and `challenger` is one of the two runs' versions (the last one registered)
    challenger = client.get_model_version_by_alias(SMOKE_POLICY, "challenger")
    assert (
        challenger.version
        == max((by_run[r] for r in two_runs), key=lambda v: int(v.version)).version
    )
    # and the gates ran one after the other: each judged against the champion the one before it left
    champion = None
    for version in versions:
        assert version.tags["gate_incumbent"] == (f"champion v{champion}" if champion else "sft"), (
            version.version
        )
        if version.tags["gate_promote"] == "True":
            champion = version.version
    # and `champion`, if any, is the version the gates made champion, and exists
    if champion is None:
        assert registry.champion_version(client, SMOKE_POLICY) is None
    else:
        assert registry.champion_version(client, SMOKE_POLICY) == champion
        assert client.get_model_version(SMOKE_POLICY, champion).tags["promoted_by"] == "gate"


def test_registry_limit_has_one_slot_and_no_slot_is_left_held(live_stack, two_runs, monkeypatch):
    # given the Prefect server the runs used
    # then the registry's global concurrency limit exists, active, one slot, and nothing holds it now
    limit = live_stack.request("GET", f"/v2/concurrency_limits/{concurrency.REGISTRY}")
    assert limit.status_code == 200
    body = limit.json()
    assert (body["limit"], body["active"], body["active_slots"]) == (1, True, 0)
    # and the worker's project root has one training slot, free
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(live_stack.checkout))
    assert concurrency.training_slots() == 1
    assert not concurrency.training_slot_taken()


def _parent_run(client: MlflowClient, flow_run_id: str):
    experiment_id = client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id
    (parent,) = [
        r
        for r in client.search_runs(
            [experiment_id], filter_string=f"tags.prefect_flow_run_id = '{flow_run_id}'"
        )
        if "mlflow.parentRunId" not in r.data.tags
    ]
    return parent


def test_each_run_has_its_own_completed_report_and_nothing_is_left_running(live_stack, two_runs):
    import json

    client = MlflowClient(tracking_uri=live_stack.mlflow_url)
    seeds = set()
    for run_id in two_runs:
        # given each run's MLflow parent run
        parent = _parent_run(client, run_id)
        # then its own report folder holds its completed report, with the gate's outcome
        report = json.loads(
            (live_stack.checkout / "reports" / parent.info.run_id / "report.json").read_text()
        )
        assert report["status"] == "completed" and report["gate"]["reason"], report.get("status")
        assert report["run"]["prefect_flow_run_id"] == run_id
        seeds.add(report["run"]["seed"])
    assert seeds == {1, 2}
    # and no MLflow run of the experiment is left RUNNING
    experiment_id = client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id
    assert client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'") == []


def test_registry_versions_have_no_gaps_and_aliases_point_at_existing_versions(
    live_stack, two_runs
):
    client = MlflowClient(tracking_uri=live_stack.mlflow_url)
    for name in (SMOKE_POLICY, SMOKE_REWARD_MODEL):
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
        # then versions run 1..n without a gap
        assert versions == list(range(1, len(versions) + 1)), (name, versions)
        # and every alias names one of them
        aliases = client.get_registered_model(name).aliases
        assert all(int(v) in versions for v in aliases.values()), (name, aliases)
