"""End to end: the rlhf_pipeline flow on the smoke profile in an isolated project root.

One temporary Prefect server serves the session (tests/conftest.py); each
project root has its own data/, runs/, reports/ and SQLite MLflow store.
"""

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from instructflow.flows.params import PipelineParams
from instructflow.tasks import data_version, leftovers, tracking
from instructflow.tasks.judge_trust import judge_is_trustworthy
from instructflow.tasks.model_card_evaluation import judged_by
from instructflow.world import layout
from tests.flows.contract import POLICY_FIELDS, SEVEN_POLICIES

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
# What `instructflow params --example` holds, run with --profile smoke (the fixture checks it).
PARAMS = PipelineParams(profile="smoke")


def _use_root(monkeypatch: pytest.MonkeyPatch, root: Path) -> str:
    """Point the project (and MLflow) at `root`; return the tracking URI."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def _run_pipeline() -> dict:
    from instructflow.flows.pipeline import rlhf_pipeline

    return rlhf_pipeline(PARAMS)


class Project:
    def __init__(self, root: Path, uri: str, result: dict):
        self.root, self.uri, self.result = root, uri, result
        self.client = MlflowClient(tracking_uri=uri)
        self.experiment_id = self.client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id

    def runs(self, filter_string: str = "") -> list:
        return self.client.search_runs([self.experiment_id], filter_string=filter_string)

    def data_runs(self, parent_id: str) -> list:
        return self.runs(f"tags.stage = 'data' and tags.mlflow.parentRunId = '{parent_id}'")


@pytest.fixture(scope="module")
def smoke_run(prefect_harness, make_project) -> Iterator[Project]:
    """A new user's smoke run in a fresh project root (data/ already present), as the README
    has it: `instructflow params --example > p.json && instructflow run --profile smoke --params p.json`."""
    from instructflow.flows.cli import main
    from instructflow.flows.params_io import build_params, read_params_file

    root = make_project()
    example = root / "p.json"
    with example.open("w") as out, contextlib.redirect_stdout(out):
        assert main(["params", "--example"]) == 0
    assert build_params(read_params_file(example) | {"profile": "smoke"}) == PARAMS
    with pytest.MonkeyPatch.context() as monkeypatch:
        uri = _use_root(monkeypatch, root)
        assert main(["run", "--profile", "smoke", "--params", str(example)]) == 0
        result = json.loads((root / "reports" / "latest" / "report.json").read_text())
        yield Project(root, uri, result)


def test_report_json_has_the_run_contract(smoke_run):
    # given a finished smoke run
    report_file = smoke_run.root / "reports" / "latest" / "report.json"
    # then reports/latest/report.json is there, with the run's identity
    assert report_file.is_file()
    report = json.loads(report_file.read_text())
    run = report["run"]
    for field in (
        "mlflow_run_id",
        "prefect_flow_run_id",
        "dvc_data_md5",
        "git_commit",
        "profile",
        "seed",
    ):
        assert run.get(field) not in (None, ""), field
    assert (run["profile"], run["seed"]) == ("smoke", 0)
    # and the data version it ran on is the one data.dvc records
    assert run["dvc_data_md5"] == data_version.tracked_md5(REPO_ROOT)
    # and the labelers' agreement is reported
    agreement = report["labelers"]["pairwise_agreement"]
    assert 0.5 < agreement < 1.0
    # and it is the report the flow returned, also kept under its MLflow run id
    assert report == json.loads(json.dumps(smoke_run.result))
    assert (smoke_run.root / "reports" / run["mlflow_run_id"] / "report.json").is_file()
    assert "pairwise agreement" in (report_file.parent / "report.md").read_text()


def test_mlflow_parent_run_is_tagged(smoke_run):
    # given the report's MLflow run id
    run_info = smoke_run.result["run"]
    parent = smoke_run.client.get_run(run_info["mlflow_run_id"])
    # then the parent run is tagged with the code, data and Prefect identities
    tags = parent.data.tags
    assert tags["git_commit"] == run_info["git_commit"]
    assert tags["dvc_data_md5"] == data_version.tracked_md5(REPO_ROOT)
    assert tags["prefect_flow_run_id"] == run_info["prefect_flow_run_id"]
    assert tags["data_mismatch"] == "false" and run_info["data_mismatch"] is False
    # and, once ended, no liveness token (bookkeeping of a RUNNING run), its host kept
    assert leftovers.TAG_TOKEN not in tags and tags[leftovers.TAG_HOST]
    # and its Overview describes the outcome (MLflow's run description)
    assert tags["mlflow.note.content"].startswith("Status: **completed**\n\n## Promotion gate")
    assert parent.info.status == "FINISHED"
    # and named as its Prefect flow run is, with every setting in force as a param
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    stages = {"sft", "flan", "t0", "ppo", "ppo_ptx", "evaluation", "registry"}
    with get_client(sync_client=True) as prefect:
        flow_run = prefect.read_flow_run(run_info["prefect_flow_run_id"])
        of_this_run = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
        # The server records task runs from the events the client sends in the background:
        # on busy cores the last stages' can arrive seconds after the flow run returned.
        deadline = time.monotonic() + 60
        while True:
            task_runs = {t.name for t in prefect.read_task_runs(flow_run_filter=of_this_run)}
            if stages <= task_runs or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        artifacts = prefect.read_artifacts(flow_run_filter=of_this_run)
    # and its Parameters tab shows the profile and the file's top-level fields, none of the
    # file's stage defaults: they are tiny's sizes, and the run used smoke's
    shown = flow_run.parameters["params"]
    assert shown["profile"] == "smoke" and not shown.keys() & {"base", "sft", "ppo", "gate"}
    # and its artifacts are the report's, each with a key (no raw result record, type unknown)
    assert {"rlhf-report", "rlhf-policies", "settings-in-force"} <= {a.key for a in artifacts}
    assert all(a.key and a.type in ("markdown", "table") for a in artifacts), artifacts
    # whose task runs are named by their stage (FLAN and T0 run SFT's task, PPO-ptx PPO's)
    assert stages <= task_runs
    assert parent.info.run_name == f"rlhf-smoke-seed0-{flow_run.name}"
    params = parent.data.params
    assert params["profile"] == "smoke" and params["base.n_layer"] == "2"  # the profile's size
    assert params["ppo.lr"] == str(PipelineParams(profile="smoke").stage("ppo").lr)
    # and the report is logged to it
    artifacts = [a.path for a in smoke_run.client.list_artifacts(parent.info.run_id, "report")]
    assert "report/report.json" in artifacts


def test_seconds_per_stage_in_report_and_mlflow(smoke_run):
    # given a finished smoke run's report and MLflow parent run
    seconds = smoke_run.result["run"]["stage_seconds"]
    parent = smoke_run.client.get_run(smoke_run.result["run"]["mlflow_run_id"])
    # then every stage has its wall seconds, all positive, the registry's too (it runs
    # before the report is written)
    stages = {"data_restore", "data", "base_model", "sft", "comparisons", "reward_model"}
    stages |= {"judge", "ppo", "ppo_ptx", "flan", "t0", "evaluation", "registry"}
    assert set(seconds) == stages
    assert all(value > 0 for value in seconds.values())
    # and MLflow holds the same figures
    metrics = parent.data.metrics
    for stage in stages:
        assert metrics[f"stage_seconds/{stage}"] > 0, stage
    assert metrics["stage_seconds/sft"] == seconds["sft"]  # one figure, 2 decimals
    assert metrics["stage_seconds/registry"] == seconds["registry"]


def test_the_parent_run_holds_every_policys_evaluation_figures(smoke_run):
    from instructflow.tasks.evaluation import flat_metrics

    report = smoke_run.result
    parent = smoke_run.client.get_run(report["run"]["mlflow_run_id"]).data.metrics
    # then each policy's means from the report are on the parent run as eval/<policy>/<metric>
    expected = flat_metrics(report["policies"])
    assert expected and "eval/ppo/win_rate_vs_sft" in expected
    for key, value in expected.items():
        if value == value:  # NaN figures are not logged
            assert parent[key] == pytest.approx(value), key


def test_data_stage_is_a_nested_run_with_metrics_and_datasets(smoke_run):
    parent_id = smoke_run.result["run"]["mlflow_run_id"]
    md5 = data_version.tracked_md5(REPO_ROOT)
    # given the nested runs tagged stage=data under the parent
    data_runs = smoke_run.data_runs(parent_id)
    # then there is exactly one, not cached, with the data metrics
    assert len(data_runs) == 1
    data_run = data_runs[0]
    assert data_run.data.tags["mlflow.parentRunId"] == parent_id
    assert data_run.data.tags.get("cached") != "true"
    metrics = data_run.data.metrics
    assert metrics["data/labeler_agreement"] == pytest.approx(
        smoke_run.result["labelers"]["pairwise_agreement"]
    )
    assert metrics[f"data/rows/{layout.EVAL_TEST.removesuffix('.jsonl')}"] == 120
    # and the tables it read are logged as datasets whose digest is DVC's md5
    inputs = data_run.inputs.dataset_inputs
    assert {i.dataset.name for i in inputs} >= {layout.SFT_TRAIN, layout.EVAL_TEST}
    for dataset_input in inputs:
        digest = dataset_input.dataset.digest
        assert len(digest) >= 8
        assert md5.startswith(digest), digest


def test_unchanged_rerun_finds_the_data_stage_cached(smoke_run):
    first_parent = smoke_run.result["run"]["mlflow_run_id"]
    first_data_run = smoke_run.data_runs(first_parent)[0]
    # given the first run's project root
    with pytest.MonkeyPatch.context() as monkeypatch:
        _use_root(monkeypatch, smoke_run.root)
        # when the same parameters run again
        second = _run_pipeline()
    # then it is a new pipeline run on the same data
    second_parent = second["run"]["mlflow_run_id"]
    assert second_parent != first_parent
    assert second["run"]["dvc_data_md5"] == smoke_run.result["run"]["dvc_data_md5"]
    assert second["run"]["prefect_flow_run_id"] != smoke_run.result["run"]["prefect_flow_run_id"]
    # and its data stage came from Prefect's cache, still with a nested MLflow run
    data_runs = smoke_run.data_runs(second_parent)
    assert len(data_runs) == 1
    tags = data_runs[0].data.tags
    assert tags["cached"] == "true"
    assert tags["cached_from_run_id"] == first_data_run.info.run_id
    # carrying the metrics of the run that computed it
    assert data_runs[0].data.metrics["data/labeler_agreement"] == pytest.approx(
        first_data_run.data.metrics["data/labeler_agreement"]
    )
    assert second["labelers"] == smoke_run.result["labelers"]


def test_changed_data_fails_the_run_and_leaves_no_report(
    prefect_harness, make_project, change_one_byte, monkeypatch
):
    # given a project whose data/ differs from data.dvc by one byte
    root = make_project()
    change_one_byte(root / "data" / "smoke" / layout.SFT_TRAIN)
    _use_root(monkeypatch, root)
    # when the pipeline runs
    # then it is refused before training (the input checks run the DVC gate first), naming data.dvc
    from prefect.exceptions import FailedRun

    from instructflow.tasks.preflight import InputRefused

    # (FailedRun with the same message: Prefect's engine raises it instead when its test
    # server, its SQLite database locked on a loaded machine, fails to take the Failed state)
    with pytest.raises((InputRefused, FailedRun), match=r"data/ does not match data\.dvc"):
        _run_pipeline()
    # and it wrote no report and ran no stage
    assert not (root / "reports").exists()
    assert not (root / "runs" / "data").exists()


def test_git_commit_is_the_commit_of_the_code_that_ran(smoke_run):
    # given the checkout the pipeline's code comes from
    expected = tracking.git_commit(REPO_ROOT).split("+")[0]
    if expected == "unknown":
        pytest.skip("the code does not run from a git checkout")
    # then the run records that commit, wherever INSTRUCTFLOW_ROOT points
    assert smoke_run.result["run"]["git_commit"].split("+")[0] == expected


def test_every_field_of_the_report_contract_is_filled(smoke_run):
    # given the smoke run's report
    report = json.loads((smoke_run.root / "reports" / "latest" / "report.json").read_text())
    # then the reward model's accuracies are there
    for field in ("accuracy_heldout_labels", "accuracy_vs_gold"):
        assert 0.0 <= report["reward_model"][field] <= 1.0, field
    # and split by task family, for every family the held-out prompts ask about
    by_family = report["reward_model"]["accuracy_vs_gold_by_family"]
    assert by_family and all(0.0 <= v <= 1.0 for v in by_family.values()), by_family
    # and all seven policies have every field, with CIs where the contract has them
    assert set(report["policies"]) == SEVEN_POLICIES
    for name, row in report["policies"].items():
        for field in POLICY_FIELDS:
            assert field in row, (name, field)
        for field in ("gold_score", "win_rate_vs_sft"):
            lo, hi = row[field]["ci95"]
            assert lo <= row[field]["mean"] <= hi, (name, field)
        assert row["per_family"] and all("gold_score" in v for v in row["per_family"].values())
    # and the plots the report shows exist beside it
    markdown = (smoke_run.root / "reports" / "latest" / "report.md").read_text()
    for plot in ("win_rate_vs_sft.png", "per_family_gold.png", "score_vs_kl.png"):
        assert plot in markdown and (smoke_run.root / "reports" / "latest" / plot).is_file()


def test_the_held_out_judge_is_reported_beside_gold_and_labelers(smoke_run):
    # given the smoke run's report
    report = json.loads((smoke_run.root / "reports" / "latest" / "report.json").read_text())
    judge = report["judge"]
    # then it names what judged, on how many pairs, and how accurate that was on pairs it never trained on
    assert judge["kind"] == "reward_model_on_heldout_preferences"
    assert judge["training_pairs"] > 0 and judge["test_pairs"] > 0
    assert 0.0 <= judge["accuracy_heldout_pairs"] <= 1.0
    trusted = judge_is_trustworthy(judge["accuracy_heldout_pairs"], judge["test_pairs"])
    assert judge["trustworthy"] == trusted[0] and judge["trust_reason"] == trusted[1]
    # and its agreement with gold stands beside the held-out labelers', on the same pairs
    agreement = judge["agreement_with_gold"]
    assert agreement["pairs"] > 0
    assert 0.0 <= agreement["judge"] <= 1.0 and 0.0 <= agreement["heldout_labelers"] <= 1.0
    assert set(agreement["by_policy"]) == SEVEN_POLICIES
    assert agreement["unseen_prompts"]["pairs"] <= agreement["pairs"]
    assert judge["agreement_within_margin"] == (
        agreement["judge"] >= agreement["heldout_labelers"] - 0.10
    )
    # and every policy has the judge's win rate against SFT with its CI
    for name, row in report["policies"].items():
        lo, hi = row["judge_win_rate_vs_sft"]["ci95"]
        assert lo <= row["judge_win_rate_vs_sft"]["mean"] <= hi, name
    # and MLflow has the judge's own nested run and the figures on the parent run
    parent_id = report["run"]["mlflow_run_id"]
    judge_runs = smoke_run.runs(f"tags.stage = 'judge' and tags.mlflow.parentRunId = '{parent_id}'")
    assert len(judge_runs) == 1
    assert judge_runs[0].data.metrics["judge/accuracy_heldout_pairs"] == pytest.approx(
        judge["accuracy_heldout_pairs"]
    )
    parent = smoke_run.client.get_run(parent_id).data.metrics
    assert parent["eval/judge/gold_agreement"] == pytest.approx(agreement["judge"])
    assert parent["eval/judge/labelers_gold_agreement"] == pytest.approx(
        agreement["heldout_labelers"]
    )
    assert "Held-out judge" in (smoke_run.root / "reports" / "latest" / "report.md").read_text()
    # and the registered version's card says of the judge what the report says, in its words
    gate = report["gate"]
    version = smoke_run.client.get_model_version(gate["model_name"], gate["policy_version"])
    assert judged_by(judge) in version.description  # its verdict and reason, as sentences


def test_the_report_says_when_the_candidate_kept_sfts_weights(smoke_run):
    # given the candidate's PPO stage run (its selection's chosen iteration)
    parent_id = smoke_run.result["run"]["mlflow_run_id"]
    candidate = smoke_run.result["gate"]["candidate"]
    (stage_run,) = smoke_run.runs(
        f"tags.stage = '{candidate}' and tags.mlflow.parentRunId = '{parent_id}'"
    )
    kept_start = stage_run.data.metrics[f"{candidate}/chosen_iteration"] == 0
    # then the gate block and report.md say the candidate is SFT's weights exactly when it is
    note = smoke_run.result["gate"].get("candidate_note")
    assert (note is not None) == kept_start
    markdown = (smoke_run.root / "reports" / "latest" / "report.md").read_text()
    assert ("- candidate: " in markdown) == kept_start
    if kept_start:  # and its policy moved nowhere from SFT
        assert smoke_run.result["policies"][candidate]["kl_to_sft"] == 0.0
