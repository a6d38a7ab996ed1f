"""End to end: a 3-seed sweep on reduced smoke sizes, and a same-seed rerun elsewhere.

The sweep runs seeds 0, 1, 2 in one project root (two processes at a time,
one thread each); a plain `instructflow run` of seed 0 in a second, fresh root
(beside the sweep) must give the sweep's seed-0 report field for field (the
only multi-run test this module adds: the sweep's child is the first of the
two same-seed runs).
"""

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from instructflow.flows.params import PipelineParams
from instructflow.tasks import tracking
from tests.conftest import cli_env
from tests.flows.contract import SEVEN_POLICIES

pytestmark = pytest.mark.slow

SEEDS = [0, 1, 2]
# What differs between two runs by construction: their ids and timings. interop_threads is
# the size of torch's inter-op pool, which can be set once per process: this
# test process set it before the test ran, each sweep child at its start. It
# decides how many independent ops run side by side, not how any op rounds.
NOT_COMPARED = {
    ("run", "mlflow_run_id"),
    ("run", "prefect_flow_run_id"),
    ("run", "stage_seconds"),  # wall-clock time
    # Which stages were served from the cache: the seeds share the data stage (no seed in
    # its key), and whichever seed reaches it second takes it from the cache.
    ("run", "cached_stages"),
    # The registry's version number: the sweep's seeds train at once, so which seed's
    # registry stage comes first (and is v1 of the sweep's model) varies between sweeps.
    ("gate", "policy_version"),
}
NOT_COMPARED_PROVENANCE = {"interop_threads"}


def _use_root(monkeypatch: pytest.MonkeyPatch, root: Path) -> str:
    uri = f"sqlite:///{root / 'mlflow.db'}"
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(scope="module")
def sweep(prefect_harness, make_project, fast_smoke) -> Iterator[dict]:
    from instructflow.flows.sweep import child_params, run_sweep

    params = PipelineParams(**fast_smoke(threads=1))
    out = {}
    # The plain seed-0 run is `instructflow run` in a second root, beside the sweep: two
    # workers leave a core idle while the third seed trains alone.
    again = make_project()
    (again / "params.json").write_text(child_params(params, 0).model_dump_json())
    with (again / "run.log").open("w") as log:
        rerun = subprocess.Popen(
            [sys.executable, "-m", "instructflow.flows.cli", "run", "--params", "params.json"],
            cwd=again, env=cli_env(again), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    with pytest.MonkeyPatch.context() as monkeypatch:
        out["root"] = make_project()
        out["uri"] = _use_root(monkeypatch, out["root"])
        out["result"] = run_sweep(params, SEEDS, workers=2)
    assert rerun.wait(timeout=900) == 0, (again / "run.log").read_text()[-4000:]
    out["rerun"] = json.loads((again / "reports" / "latest" / "report.json").read_text())
    yield out


def _without_ids(report: dict) -> dict:
    copy = json.loads(json.dumps(report))
    for block, field in NOT_COMPARED:
        copy[block].pop(field)
    for field in NOT_COMPARED_PROVENANCE:
        copy["provenance"].pop(field)
    # Memory is the machine's measurement, as wall time is (the stage's own peak RSS: what
    # the allocator kept from earlier work in the process moves it).
    for readings in [*copy.get("training", {}).values(), copy.get("reward_model") or {}]:
        readings.pop("peak_memory_mb", None)
        readings.pop("process_peak_memory_mb", None)  # the whole process's: so much the more
    return copy


def test_same_seed_same_machine_same_report_field_by_field(sweep):
    # given the sweep's seed-0 report (a child process) and a plain seed-0 run in a fresh root
    root = sweep["root"]
    child_id = sweep["result"]["sweep"]["child_runs"]["0"]
    child = json.loads((root / "reports" / child_id / "report.json").read_text())
    rerun = sweep["rerun"]
    # then both pinned one thread and recorded it
    assert child["provenance"]["threads"] == rerun["provenance"]["threads"] == 1
    # and every field but the ids is equal, floats bit for bit
    a, b = _without_ids(child), _without_ids(rerun)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == b[key], key


def test_aggregate_has_every_statistic_for_every_policy(sweep):
    result = sweep["result"]
    assert result["seeds"] == SEEDS
    assert set(result["policies"]) == SEVEN_POLICIES
    for policy, metrics in result["policies"].items():
        for metric in ("win_rate_vs_sft", "gold_score", "public_suite_accuracy"):
            entry = metrics[metric]
            for stat in ("mean", "sd", "min", "max"):
                assert isinstance(entry[stat], float), (policy, metric, stat)
            assert entry["min"] <= entry["mean"] <= entry["max"]
            assert len(entry["ci95"]) == 2 and entry["ci95"][0] <= entry["ci95"][1]
            assert set(entry["per_seed"]) == {"0", "1", "2"}
    # the seeds trained different policies: some figure differs between seeds
    assert any(e["sd"] > 0 for metrics in result["policies"].values() for e in metrics.values())
    # and the candidate's seeds met head to head (3 pairs), giving the gate's noise margin
    noise = result["gate_noise"]
    assert len(noise["pairs"]) == 3 and 0 <= noise["win_margin"] <= 0.5
    assert result["provenance"]["seeds"] == SEEDS and result["provenance"]["threads"] == 1


def test_three_child_runs_under_one_parent_and_no_champion(sweep):
    client = MlflowClient(tracking_uri=sweep["uri"])
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id
    sweep_id = sweep["result"]["sweep"]["mlflow_run_id"]
    nested = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{sweep_id}'")
    # under the sweep's run: the data stage (validated once, for every seed) and one run per seed
    assert [r.data.tags["stage"] for r in nested if "stage" in r.data.tags] == ["data"]
    # one finished run per seed (a seed the busy server stopped leaves a failed one too)
    children = [r for r in nested if "stage" not in r.data.tags and r.info.status == "FINISHED"]
    assert sorted(int(r.data.tags["seed"]) for r in children) == SEEDS
    parent = client.get_run(sweep_id)
    assert "sweep/ppo/win_rate_vs_sft/sd" in parent.data.metrics
    assert parent.data.tags["provenance.threads"] == "1"
    # each child has its own stage runs under it
    for child in children:
        stages = client.search_runs(
            [experiment], f"tags.mlflow.parentRunId = '{child.info.run_id}'"
        )
        assert {"sft", "evaluation"} <= {r.data.tags.get("stage") for r in stages}
    # and a sweep never moves champion, nor touches the models of real or smoke runs
    for name in ("instructflow-policy-smoke-sweep", "instructflow-policy-smoke"):
        with pytest.raises(MlflowException):
            client.get_model_version_by_alias(name, "champion")
    assert client.search_model_versions("name = 'instructflow-policy-smoke'") == []
    assert len(client.search_model_versions("name = 'instructflow-policy-smoke-sweep'")) == 3


def test_seeds_are_prefect_sub_flow_runs(sweep):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        # every flow run of the session's server, a page at a time: one read gets the first
        # 200 in id order (random ids), which this worker's earlier tests may exceed
        runs, page = [], None
        while page is None or len(page) == 200:
            page = client.read_flow_runs(limit=200, offset=len(runs))
            runs += page
        sweeps = [r for r in runs if r.name and r.parameters.get("seeds") == SEEDS]
        children = [
            r
            for r in runs
            if r.parent_task_run_id is not None
            and r.parameters.get("sweep_run_id") == sweep["result"]["sweep"]["mlflow_run_id"]
            and r.state_type == StateType.COMPLETED  # not a try the busy server stopped
        ]
    assert sweeps and len(children) == 3


def test_reaggregating_the_sweep_reproduces_every_figure(sweep, monkeypatch, tmp_path):
    from tests.scripts import load_script

    script = load_script("sweep_aggregate")
    root = sweep["root"]
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(root))
    aggregate = root / "reports" / "sweeps" / sweep["result"]["sweep"]["mlflow_run_id"]
    out = tmp_path / "again.json"
    # when the aggregate is recomputed from the children's reports with the same code
    assert script.main([str(aggregate / "aggregate.json"), "-o", str(out)]) == 0
    again, first = (
        json.loads(out.read_text()),
        json.loads((aggregate / "aggregate.json").read_text()),
    )
    # then every figure is the same, and the recomputation is stamped
    for block in ("seeds", "policies", "reward_model", "world", "gate_noise", "provenance"):
        assert again[block] == first[block], block
    assert again["reaggregated"]["recomputed"] == ["seeds", "policies", "reward_model", "world"]
