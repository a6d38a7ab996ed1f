"""End to end on real servers: `make serve`'s script, a Custom Run of manual-run, MLflow and the registry.

The live stack (tests/live_stack.py, shared by tests/conftest.py) is scripts/serve.sh started in a copy of
the checkout on free loopback ports: a Prefect server with a fresh database,
the instructflow-process pool, the deployments of prefect.yaml, a worker, and
an MLflow server. The flow run regenerates data/ there (a fresh clone has
none) and logs to the MLflow server over HTTP.
"""

import subprocess

import pytest
from mlflow import MlflowClient

from instructflow.tasks import tracking
from tests.flows.contract import SMOKE_POLICY, SMOKE_REWARD_MODEL
from tests.flows.stages import STAGES

pytestmark = pytest.mark.slow


def test_serve_prints_the_urls_and_how_to_trigger_a_run(live_stack):
    # given the stack scripts/serve.sh started
    out = live_stack.serve_output
    # then it printed where the UIs are and how to start a run
    assert live_stack.prefect_url in out
    assert live_stack.mlflow_url in out
    assert "prefect deployment run rlhf_pipeline/manual-run" in out
    # and the deployments exist, on the process pool, scheduled-retrain with a weekly UTC cron
    deployments = {
        d["name"]: d for d in live_stack.request("POST", "/deployments/filter", json={}).json()
    }
    assert set(deployments) >= {"scheduled-retrain", "manual-run", "smoke-check"}
    assert {d["work_pool_name"] for d in deployments.values()} == {"instructflow-process"}
    schedules = {
        (s["schedule"]["cron"], s["schedule"]["timezone"]): s
        for s in deployments["scheduled-retrain"]["schedules"]
    }
    assert set(schedules) == {("0 3 * * 1", "UTC"), ("0 2 * * *", "UTC")}
    assert deployments["scheduled-retrain"]["parameters"] == {"params": {"profile": "tiny"}}
    weekly, nightly = schedules[("0 3 * * 1", "UTC")], schedules[("0 2 * * *", "UTC")]
    assert weekly["active"] and not weekly["parameters"]
    # a schedule with parameters of its own, off until a user switches it on
    assert not nightly["active"] and nightly["parameters"] == {"params": {"profile": "smoke"}}
    assert deployments["manual-run"]["schedules"] == []
    # Quick run of smoke-check is a smoke run; manual-run's is the form's defaults
    assert deployments["smoke-check"]["parameters"] == {"params": {"profile": "smoke"}}
    # and manual-run's form is PipelineParams
    schema = deployments["manual-run"]["parameter_openapi_schema"]
    assert "PipelineParams" in schema.get("definitions", schema.get("$defs", {}))
    # and the pull step runs flows from the directory the deployment was made from
    steps = deployments["manual-run"]["pull_steps"]
    assert steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(live_stack.checkout)}}
    ]


def test_serve_is_idempotent(live_stack):
    # given the running stack
    pids = {f.name: f.read_text() for f in (live_stack.checkout / ".serve").glob("*.pid")}
    # when serve.sh runs again
    again = live_stack.script("serve.sh")
    # then it says what already runs and starts nothing new
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Prefect server already running" in again.stdout
    assert "MLflow server already running" in again.stdout
    assert "worker already running" in again.stdout
    assert {f.name: f.read_text() for f in (live_stack.checkout / ".serve").glob("*.pid")} == pids


def _line_after(lines: list[str], header: str) -> str:
    return lines[next(i for i, line in enumerate(lines) if line.startswith(header)) + 1]


def _weekly_active(live_stack) -> bool:
    deployment = live_stack.request("GET", "/deployments/name/rlhf_pipeline/scheduled-retrain")
    (weekly,) = [s for s in deployment.json()["schedules"] if s["schedule"]["cron"] == "0 3 * * 1"]
    return weekly["active"]


def test_make_serve_says_the_weekly_retrain_is_on_and_its_pause_command_pauses_it(live_stack):
    # given what `make serve` printed
    lines = live_stack.serve_output.splitlines()
    assert _weekly_active(live_stack)
    assert any(line.startswith("scheduled-retrain is ON") for line in lines), (
        live_stack.serve_output
    )
    pause = _line_after(lines, "scheduled-retrain is ON")
    try:
        # when the printed command runs as printed (in a shell, its PREFECT_API_URL= included)
        ran = subprocess.run(
            ["bash", "-c", pause], env=live_stack.env, capture_output=True, text=True, timeout=120
        )
        assert ran.returncode == 0, ran.stdout + ran.stderr
        # then the weekly schedule is paused
        assert not _weekly_active(live_stack)
    finally:  # the session's other tests of the live stack find it as make serve left it
        resume = pause.replace(" schedule pause ", " schedule resume ")
        subprocess.run(["bash", "-c", resume], env=live_stack.env, timeout=120, check=False)
    assert _weekly_active(live_stack)


def test_custom_run_of_manual_run_completes(live_stack, live_manual_run):
    # given a Custom Run of manual-run with parameters of our own
    flow_run = live_manual_run["flow_run"]
    # then the worker ran it to completion, with those parameters
    assert flow_run["state"]["type"] == "COMPLETED", live_stack.logs(live_manual_run["id"])
    assert flow_run["state"]["name"] == "Completed"
    assert flow_run["parameters"]["params"]["seed"] == 1
    assert flow_run["parameters"]["params"]["profile"] == "smoke"
    # and ran from the checkout, regenerating data/ there as on a fresh clone
    assert (live_stack.checkout / "data" / "smoke").is_dir()
    assert (live_stack.checkout / "reports" / "latest" / "report.json").is_file()


def _parent_run(live_stack, flow_run_id: str):
    client = MlflowClient(tracking_uri=live_stack.mlflow_url)
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
    assert experiment is not None
    parents = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.prefect_flow_run_id = '{flow_run_id}'"
    )
    parents = [r for r in parents if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    return client, experiment, parents[0]


def test_mlflow_server_holds_the_parent_run_and_its_stage_runs(live_stack, live_manual_run):
    assert live_manual_run["flow_run"]["state"]["type"] == "COMPLETED"
    # given the MLflow server the flow run logged to
    client, experiment, parent = _parent_run(live_stack, live_manual_run["id"])
    # then the parent run finished, tagged with the run's identity
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["dvc_data_md5"].endswith(".dir")
    assert parent.data.params["seed"] == "1"
    # and every stage has a nested run under it, with namespaced metrics
    children = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    assert {c.data.tags["stage"] for c in children} == STAGES
    assert all(c.info.status == "FINISHED" for c in children)
    by_stage = {c.data.tags["stage"]: c for c in children}
    assert any(k.startswith("rm/") for k in by_stage["reward_model"].data.metrics)
    assert any(k.startswith("ppo/") for k in by_stage["ppo_ptx"].data.metrics)
    # and the report is an artifact of the parent run
    assert "report/report.json" in [
        a.path for a in client.list_artifacts(parent.info.run_id, "report")
    ]


def test_challenger_is_registered_and_the_gate_decision_is_recorded(live_stack, live_manual_run):
    assert live_manual_run["flow_run"]["state"]["type"] == "COMPLETED"
    client, _, parent = _parent_run(live_stack, live_manual_run["id"])
    # given the version `challenger` named right after the run
    version = live_manual_run["challenger"]
    assert version is not None
    # then it is this run's candidate, with its lineage and metrics as tags
    assert version.tags["mlflow_parent_run_id"] == parent.info.run_id
    assert version.tags["prefect_flow_run_id"] == live_manual_run["id"]
    assert version.tags["policy"] == "ppo_ptx"
    # and it carries the gate's decision
    assert version.tags["gate_promote"] in {"True", "False"}
    assert version.tags["gate_reason"]
    assert version.tags["gate_incumbent"] == "sft"  # a fresh registry: the bar is SFT
    # and, if the gate passed, it became champion through the gate
    assert (version.tags.get("promoted_by") == "gate") == (version.tags["gate_promote"] == "True")
    # and the reward model was registered beside it
    assert client.get_latest_versions(SMOKE_REWARD_MODEL)
    # and the flow run published the gate's decision as a Prefect artifact
    artifacts = live_stack.artifacts(live_manual_run["id"], "promotion-gate")
    assert len(artifacts) == 1
    assert f"{SMOKE_POLICY} v{version.version}" in artifacts[0]["data"]
    assert ("PROMOTED" in artifacts[0]["data"]) == (version.tags["gate_promote"] == "True")
