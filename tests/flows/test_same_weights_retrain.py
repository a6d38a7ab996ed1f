"""A scheduled retrain that reproduces the champion's weights adds no registry version.

Run 1 is the session's first reduced smoke run, whose challenger we make champion by
hand. Run 2 changes a PPO setting that changes PPO's cache key (so its output folder)
but not what it trains: a KL budget no point reaches. Its candidate is byte for byte the
champion's weights, so the registry keeps one version, the champion stays champion, and
the report says which version holds the weights.
"""

import pytest
from mlflow import MlflowClient

from instructflow.flows.params import PipelineParams
from instructflow.tasks import promotion, registry
from tests.conftest import use_project
from tests.flows.contract import SMOKE_POLICY

pytestmark = pytest.mark.slow


def test_a_retrain_with_the_same_weights_reuses_the_champions_version(
    first_run, copy_of_first_run, fast_smoke
):
    from instructflow.flows.pipeline import rlhf_pipeline

    with pytest.MonkeyPatch.context() as monkeypatch:
        client = MlflowClient(tracking_uri=use_project(monkeypatch, copy_of_first_run()))
        champion = str(client.get_model_version_by_alias(SMOKE_POLICY, "challenger").version)
        promotion.promote_manually(champion, "the scheduled run's champion", SMOKE_POLICY)
        # when the retrain runs with an unrelated setting changed
        again = rlhf_pipeline(PipelineParams(**fast_smoke(ppo={"kl_budget": 1e9})))
    first = first_run["result"]
    candidate = first["gate"]["candidate"]
    # then PPO trained again, into another folder
    assert again["run"]["stage_keys"][candidate] != first["run"]["stage_keys"][candidate]
    # and registered nothing new: the champion's version is the candidate, and stays champion
    versions = [str(v.version) for v in client.search_model_versions(f"name = '{SMOKE_POLICY}'")]
    assert versions == [champion]
    gate = again["gate"]
    assert gate["policy_version"] == champion and gate["registered"] == "existing"
    assert gate["incumbent"] == "sft"  # not the champion against itself
    assert registry.champion_version(client, SMOKE_POLICY) == champion
    assert gate["note_registered"].startswith(f"{SMOKE_POLICY} v{champion} already holds")
    # and the version keeps the first run's lineage (the run that made these weights) and
    # names the retrain that confirmed them, whose gate its card and gate tags now show
    version = client.get_model_version(SMOKE_POLICY, champion)
    assert version.tags["mlflow_parent_run_id"] == first["run"]["mlflow_run_id"]
    retrain = again["run"]["mlflow_run_id"]
    assert version.tags["last_confirmed_by_mlflow_parent_run_id"] == retrain
    origin, confirmed = version.description.split("## Last confirmed by")
    assert first["run"]["mlflow_run_id"] in origin and retrain not in origin
    assert retrain in confirmed
