"""Stage caching across pipeline runs: unchanged -> all cached; a PPO change -> PPO onwards;
a stage's output deleted -> that stage; a challenger or champion moved to another
checkpoint -> the registry stage only; new data -> all.

Seven runs in one isolated project root (reduced smoke sizes), on the session's
Prefect test server: the session's first run, in a copy of the root it left (so
the unchanged re-run also shows that keys do not depend on where the project
lives), then six more. Which stages ran is read from MLflow: every stage has a
nested run under the pipeline's parent run, tagged cached=true when Prefect
served it from its cache.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient

from instructflow.flows.params import PipelineParams
from instructflow.tasks import promotion, registry, tracking
from tests.conftest import use_project
from tests.flows.contract import SMOKE_POLICY
from tests.flows.stages import STAGES

pytestmark = pytest.mark.slow

AFTER_PPO = {"ppo", "ppo_ptx", "evaluation", "registry"}


@dataclass
class Run:
    result: dict
    wall_s: float
    stages: dict[str, bool]  # stage -> taken from the cache
    gate: dict  # policy_version registered (or found registered) and the gate's decision


class Project:
    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch):
        self.root = root
        self.uri = use_project(monkeypatch, root)

    def run(self, params: dict) -> Run:
        from instructflow.flows.pipeline import rlhf_pipeline

        started = time.perf_counter()
        result = rlhf_pipeline(PipelineParams(**params))
        return self.record(result, time.perf_counter() - started)

    def record(self, result: dict, wall_s: float) -> Run:
        """A run of this project (made here, or in the root this one was copied from)."""
        parent_id = result["run"]["mlflow_run_id"]
        return Run(result, wall_s, self.stages(parent_id), self.gate(parent_id))

    def gate(self, parent_id: str) -> dict:
        """The registry stage's outcome, from its pipeline run's tags."""
        tags = MlflowClient(tracking_uri=self.uri).get_run(parent_id).data.tags
        return {"policy_version": tags["policy_version"], "decision": tags["gate_decision"]}

    def stages(self, parent_id: str) -> dict[str, bool]:
        client = MlflowClient(tracking_uri=self.uri)
        experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
        children = client.search_runs(
            [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
        )
        stages: dict[str, bool] = {}
        for child in children:
            stage = child.data.tags["stage"]
            assert stage not in stages, f"two nested runs for stage {stage}"
            stages[stage] = child.data.tags.get("cached") == "true"
        return stages

    def new_data_version(self) -> str:
        """New data recorded as a new DVC version: the smoke world regenerated from another seed, `dvc add data`."""
        from dvc.repo import Repo

        from instructflow.tasks import data, data_version

        data.write_profile(self.root / "data" / "smoke", "smoke", seed=1)
        with Repo(str(self.root)) as repo:
            repo.add([str(self.root / "data")])
        return data_version.tracked_md5(self.root)


def _gate_artifacts(flow_run_id: str) -> list:
    """The `promotion-gate` artifacts of a Prefect flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
    )

    with get_client(sync_client=True) as prefect:
        return prefect.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["promotion-gate"])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        )


def ran(run: Run) -> set[str]:
    return {stage for stage, cached in run.stages.items() if not cached}


@pytest.fixture(scope="module")
def runs(first_run, copy_of_first_run, fast_smoke) -> Iterator[dict]:
    """first (the session's), unchanged re-run, PPO lr changed, new data: one project root, in that order."""
    params = fast_smoke()
    # A learning rate that differs from whatever the first run used, by construction.
    changed_lr = PipelineParams(**params).stage("ppo").lr * 2
    with pytest.MonkeyPatch.context() as monkeypatch:
        # a copy of the root the session's first run left, so that run is this project's first
        project = Project(copy_of_first_run(), monkeypatch)
        out = {"first": project.record(first_run["result"], first_run["wall_s"])}
        out["unchanged"] = project.run(params)
        # SFT's weights deleted under runs/ (a person freeing space, a bad copy); then again.
        (sft_weights,) = (project.root / "runs" / "sft").glob("*/model/model.safetensors")
        sft_weights.unlink()
        out["sft_weights_deleted"] = project.run(params)
        out["sft_weights_back"] = sft_weights.is_file()
        out["ppo_changed"] = project.run(fast_smoke(ppo={"lr": changed_lr}))
        out["folders"] = {
            stage: len(list((project.root / "runs" / stage).iterdir())) for stage in STAGES
        }
        # The first run's checkpoint made champion (whom the gate plays is then as at the first
        # run: SFT) while the second policy stays challenger; then the first run's parameters.
        first_version = out["first"].gate["policy_version"]
        promotion.promote_manually(first_version, "caching test", SMOKE_POLICY)
        out["challenger_moved"] = project.run(params)
        out["challenger_after"] = registry.alias_version(
            MlflowClient(tracking_uri=project.uri), SMOKE_POLICY, "challenger"
        )
        # The second policy made champion by hand; then the first run's parameters again.
        promotion.promote_manually(
            out["ppo_changed"].gate["policy_version"], "caching test", SMOKE_POLICY
        )
        out["champion_moved"] = project.run(params)
        out["uri"] = project.uri
        out["old_md5"] = out["first"].result["run"]["dvc_data_md5"]
        out["new_md5"] = project.new_data_version()
        out["new_data"] = project.run(fast_smoke(ppo={"lr": changed_lr}))
        first, again = out["first"].wall_s, out["unchanged"].wall_s
        print(
            f"\nfirst run {first:.1f} s, unchanged re-run {again:.1f} s: {again / first:.1%} of the first"
        )
        yield out


def test_first_run_computes_every_stage(runs):
    assert set(runs["first"].stages) == STAGES
    assert ran(runs["first"]) == STAGES
    # and its report has the key of every stage that ran before it (the registry's comes
    # later), each once by its stage's name or by a policy's (base: base_model's)
    keys = runs["first"].result["run"]["stage_keys"]
    assert {key.rsplit("-", 1)[0] for key in keys.values()} == STAGES - {"registry"}
    assert keys["data"].startswith("data-") and keys["comparisons"].startswith("comparisons-")


def test_unchanged_rerun_finds_every_stage_cached(runs):
    # given the same parameters and data again
    again = runs["unchanged"]
    # then every stage came from the cache (each still with its nested MLflow run)
    assert set(again.stages) == STAGES
    assert ran(again) == set()
    # and the report is the same, for a new pipeline run
    assert again.result["policies"] == runs["first"].result["policies"]
    assert again.result["run"]["mlflow_run_id"] != runs["first"].result["run"]["mlflow_run_id"]
    # and it took a fraction of the first run's time
    assert again.wall_s < runs["first"].wall_s / 2
    # and its flow run has the promotion-gate artifact, as the first run's has, though
    # the registry stage's task (which made it there) did not run
    first_gate, again_gate = (
        _gate_artifacts(run.result["run"]["prefect_flow_run_id"]) for run in (runs["first"], again)
    )
    assert len(first_gate) == len(again_gate) == 1
    assert again_gate[0].data == first_gate[0].data


def test_a_deleted_output_reruns_its_stage_instead_of_serving_it(runs):
    # given SFT's model file deleted from its finished stage folder
    again = runs["sft_weights_deleted"]
    # then SFT ran again (into the same folder) and wrote it back; what reads SFT was cached
    assert ran(again) == {"sft"}
    assert runs["sft_weights_back"]
    # and the report is the same: retraining with the same seed gives the same weights
    assert again.result["policies"] == runs["first"].result["policies"]


def test_changed_ppo_config_reruns_ppo_and_what_reads_it(runs):
    # given only params.ppo.lr changed
    changed = runs["ppo_changed"]
    # then PPO, PPO-ptx, the evaluation and the registry ran again; nothing before them did
    assert set(changed.stages) == STAGES
    assert ran(changed) == AFTER_PPO
    # and its report says which stages were served from the cache
    assert set(changed.result["run"]["cached_stages"]) == STAGES - AFTER_PPO
    # and the stages before PPO kept their one output folder each; PPO onwards got a second
    folders = runs["folders"]
    before = ("data", "base_model", "sft", "comparisons", "reward_model", "judge", "flan", "t0")
    assert all(folders[stage] == 1 for stage in before), folders
    assert all(folders[stage] == 2 for stage in AFTER_PPO), folders


def test_a_champion_moved_elsewhere_reruns_only_the_gate(runs):
    # given the first run's parameters again, after another checkpoint was made champion by hand
    moved = runs["champion_moved"]
    # then only the registry stage ran: its cached decision was judged against another incumbent
    assert set(moved.stages) == STAGES
    assert ran(moved) == {"registry"}
    # and the checkpoint kept the version it was registered as, instead of a duplicate
    assert moved.gate["policy_version"] == runs["first"].gate["policy_version"]
    client = MlflowClient(tracking_uri=runs["uri"])
    champion = registry.champion_version(client, SMOKE_POLICY)
    decision_tags = client.get_model_version(SMOKE_POLICY, moved.gate["policy_version"]).tags
    # and the gate judged it against the champion set by hand
    assert (
        decision_tags["gate_incumbent"] == f"champion v{runs['ppo_changed'].gate['policy_version']}"
    )
    assert champion is not None


def test_a_later_challenger_reruns_only_the_gate_which_takes_the_alias_back(runs):
    # given the first run's parameters again, after a later run's policy became challenger
    back = runs["challenger_moved"]
    # then only the registry stage ran: its cached result named a challenger no longer there
    assert set(back.stages) == STAGES
    assert ran(back) == {"registry"}
    # and the checkpoint kept its version, and is the challenger again, as the report says
    first_version = runs["first"].gate["policy_version"]
    assert back.gate["policy_version"] == first_version
    assert runs["challenger_after"] == first_version
    assert runs["ppo_changed"].gate["policy_version"] != first_version


def test_new_data_version_reruns_everything(runs):
    # given data/ changed and recorded as a new DVC version
    assert runs["new_md5"] != runs["old_md5"]
    new = runs["new_data"]
    # then the run used it, and no stage was taken from the cache
    assert new.result["run"]["dvc_data_md5"] == runs["new_md5"]
    assert set(new.stages) == STAGES
    assert ran(new) == STAGES
