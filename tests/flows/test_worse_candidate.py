"""A deliberately worse candidate is never promoted, through the real pipeline and registry.

Run 1 (reduced smoke) registers a policy, which we make champion by hand, as a
user would with `instructflow promote`. Run 2 trains PPO and PPO-ptx against
the negated RM score; the gate must compare it with the champion and leave
`champion` where it was. (At smoke size the RM barely separates responses, so
the candidate is not measurably worse here; the note reports the tiny-scale
figures.)
"""

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from mlflow import MlflowClient

from instructflow.flows.params import PipelineParams
from instructflow.tasks import promotion
from tests.conftest import use_project
from tests.flows.contract import SMOKE_POLICY

pytestmark = pytest.mark.slow

# Large steps, no KL leash and no KL price on the checkpoint: move far from SFT.
WORSE_PPO = {
    "invert_reward": True,
    "lr": 3e-3,
    "kl_beta": 0.0,
    "kl_price": 0.0,
    "iterations": 4,
    "patience": 100,
}


@dataclass
class GateRuns:
    champion: str
    worse_version: str
    client: MlflowClient


@pytest.fixture(scope="module")
def gate_runs(copy_of_first_run, fast_smoke) -> Iterator[GateRuns]:
    from instructflow.flows.pipeline import rlhf_pipeline

    with pytest.MonkeyPatch.context() as monkeypatch:
        # run 1 is the session's first run: its project, copied
        uri = use_project(monkeypatch, copy_of_first_run())
        client = MlflowClient(tracking_uri=uri)
        champion = client.get_model_version_by_alias(SMOKE_POLICY, "challenger").version
        promotion.promote_manually(champion, "baseline for the worse-candidate test", SMOKE_POLICY)

        rlhf_pipeline(PipelineParams(**fast_smoke(ppo=WORSE_PPO)))
        worse_version = client.get_model_version_by_alias(SMOKE_POLICY, "challenger").version
        yield GateRuns(champion, worse_version, client)


def test_the_worse_candidate_is_registered_as_a_new_challenger(gate_runs):
    assert gate_runs.worse_version != gate_runs.champion


def test_the_candidate_was_trained_against_the_negated_reward(gate_runs):
    # the registered version's PPO-ptx run is the one that logged invert_reward=True
    tags = gate_runs.client.get_model_version(SMOKE_POLICY, gate_runs.worse_version).tags
    parent = tags["mlflow_parent_run_id"]
    ppo_ptx = gate_runs.client.search_runs(
        [gate_runs.client.get_run(parent).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent}' and tags.stage = 'ppo_ptx'",
    )
    assert [run.data.params["invert_reward"] for run in ppo_ptx] == ["True"]


def test_the_gate_compares_with_the_champion_and_rejects(gate_runs):
    tags = gate_runs.client.get_model_version(SMOKE_POLICY, gate_runs.worse_version).tags
    assert tags["gate_incumbent"] == f"champion v{gate_runs.champion}"
    assert tags["gate_promote"] == "False"
    assert float(tags["gate_ci95"].strip("[]").split(",")[0]) <= 0.5


def test_champion_stays_where_it_was(gate_runs):
    champion = gate_runs.client.get_model_version_by_alias(SMOKE_POLICY, "champion")
    assert champion.version == gate_runs.champion
