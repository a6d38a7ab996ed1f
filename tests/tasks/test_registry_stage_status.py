"""The embedded world's registry stage writes the policy's card (links, candidate, its note),
the reward model's lineage and card, and the registered model's champion status."""

import mlflow
from mlflow import MlflowClient

from instructflow.tasks import registry, tracking
from instructflow.tasks.evaluation import EvalConfig
from instructflow.tasks.gate import GateConfig
from instructflow.tasks.registry_config import RegistryConfig
from tests.conftest import use_project

POLICY, RM = RegistryConfig().names("smoke")
NOTE = "ppo_ptx kept its starting weights (SFT's): none of 2 iterations raised ..."


def test_a_refused_gate_writes_the_cards_lineage_and_that_there_is_no_champion(
    prefect_harness, tiny_dirs, generated_root, tmp_path, monkeypatch
):
    # given an empty registry, and a candidate that is SFT's own weights (PPO kept them)
    use_project(monkeypatch, tmp_path)
    tracking.setup()
    sft_dir, rm_dir = tiny_dirs
    client = MlflowClient()
    with mlflow.start_run(run_name="parent") as parent:
        run_id = parent.info.run_id
        lineage = {
            "profile": "smoke",
            "seed": 0,
            "dvc_data_md5": "0123abcd.dir",
            "git_commit": "cafe",
            "mlflow_parent_run_id": run_id,
            "mlflow_parent_run_url": f"http://127.0.0.1:5000/#/experiments/1/runs/{run_id}",
            "prefect_flow_run_id": "7f0c",
            "prefect_flow_run_url": "http://127.0.0.1:4200/runs/flow-run/7f0c",
        }
        # when the registry stage judges it against SFT and registers it
        result = registry.register_and_gate_task.fn(
            candidate="ppo_ptx",
            policy_dir=str(sft_dir),
            rm_dir=str(rm_dir),
            sft_dir=str(sft_dir),
            profile_dir=str(generated_root / "data" / "smoke"),
            eval_cfg=EvalConfig(max_new_tokens=8, samples_per_prompt=1),
            cfg=GateConfig(max_prompts=12),
            model_name=POLICY,
            reward_model_name=RM,
            lineage=lineage,
            policy_metrics={},
            rm_metrics={"accuracy": 0.5},
            seed=0,
            out_dir=str(tmp_path / "runs" / "registry"),
            parent_run_id=run_id,
            candidate_note=NOTE,
        )
    # then the policy's card links both runs, names the candidate and says what PPO kept
    version = result["policy_version"]
    card = client.get_model_version(POLICY, version).description
    assert f"- MLflow parent run: [`{run_id}`]({lineage['mlflow_parent_run_url']})" in card
    assert f"- Prefect flow run: [`7f0c`]({lineage['prefect_flow_run_url']})" in card
    assert "- policy: `ppo_ptx` (the run's candidate)" in card and f"- note: {NOTE}" in card
    assert result["gate"]["candidate_note"] == NOTE
    # and the reward model beside it has the run's lineage and a card
    rm = client.get_model_version(RM, result["reward_model_version"])
    for key in ("profile", "seed", "dvc_data_md5", "git_commit", "mlflow_parent_run_id"):
        assert rm.tags[key] == str(lineage[key]), key
    assert f"registered beside {POLICY} v{version}" in rm.description
    # and the reward models' registered model says what it holds and how to load one
    rm_page = client.get_registered_model(RM).description
    assert f"Reward models registered beside the versions of `{POLICY}`" in rm_page
    assert f"Latest: v{result['reward_model_version']}." in rm_page
    # and the registered model says there is no champion, and why: SFT cannot beat itself
    assert not result["gate"]["promoted"]
    assert "the candidate holds sft's own weights" in result["decision"]["reason"]
    # and the gate block records that digest verdict, for `eval import` to read
    assert result["gate"]["candidate_holds_incumbent_weights"] is True
    registry_run = client.get_run(result["mlflow_run_id"]).data.tags
    assert registry_run["gate_decision"] == "rejected"
    status = client.get_registered_model(POLICY).description
    reason = result["decision"]["reason"]
    assert f"**No champion yet**: no version has passed the gate (latest: v{version}, " in status
    assert reason in status
