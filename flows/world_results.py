"""What an embedded-world run ends with (flows/pipeline.py): the report's blocks filled from
the stages' results, and the registry stage (the candidate and the RM registered, the gate).
"""

from mlflow import MlflowClient
from prefect import get_run_logger

from instructflow.flows.params import PipelineParams
from instructflow.flows.stages import Stages
from instructflow.flows.world_stages import policy_keys, stage_key
from instructflow.tasks import (
    evaluation,
    model_lineage,
    ppo_selection,
    registry,
    registry_rival,
    report_training,
    reward_model,
)

# Each training stage (as run.stage_seconds names it) and its result's key in `models`.
TRAINING_STAGES = {
    "sft": "sft",
    "flan": "flan",
    "t0": "t0",
    "reward_model": "rm",
    "ppo": "ppo",
    "ppo_ptx": "ppo_ptx",
}


def fill_report(result: dict, summary: dict, models: dict, policies, evaluated: dict) -> None:
    """The report's labelers, reward model, policies and training blocks, and the stage keys."""
    rm_metrics = models["rm"]["metrics"]
    result["run"]["stage_keys"] = policy_keys(policies) | {
        "reward_model": models["rm_inputs"]["rm"],
        "judge": stage_key(models["judge"], "dir"),
        "evaluation": stage_key(evaluated, "dir"),
    }
    result["labelers"] = {"pairwise_agreement": summary["labeler_agreement"]}
    result["reward_model"] = {
        "accuracy_heldout_labels": rm_metrics["rm/accuracy_heldout_labels"],
        "accuracy_vs_gold": rm_metrics["rm/accuracy_vs_gold"],
        "accuracy_vs_gold_by_family": {
            name.removeprefix(reward_model.BY_FAMILY_PREFIX): value
            for name, value in rm_metrics.items()
            if name.startswith(reward_model.BY_FAMILY_PREFIX)
        },
    }
    result["policies"] = evaluated["rows"]
    result["training"] = report_training.training_block(
        {stage: models[key]["metrics"] for stage, key in TRAINING_STAGES.items()}
    )


def register_and_gate(
    stage: Stages, params: PipelineParams, models, policies, evaluated, result, run_info
):
    """Register the candidate and the RM, and let the gate decide (instructflow.tasks.registry)."""
    candidate, rm, sft_out = params.candidate, models["rm"], models["sft"]
    lineage = model_lineage.pipeline_lineage(
        params, result["run"], run_info, candidate, sft_out["mlflow_run_id"]
    )
    policy_metrics = {
        k.split("/", 2)[2]: round(v, 4)
        for k, v in evaluation.flat_metrics({candidate: result["policies"][candidate]}).items()
    }
    model_name, reward_model_name = params.registry.names(params.profile)
    policy_dir = policies[candidate]["model_dir"]
    client = MlflowClient()
    gate = stage(
        registry.register_and_gate_task,
        "registry",
        "gate",
        models["rm_inputs"]
        | {
            "policy": policy_keys(policies)[candidate],
            "evaluation": stage_key(evaluated, "dir"),
            "gate_opponent": registry_rival.gate_opponent(client, policy_dir, model_name),
        },
        stale_because=lambda cached: registry_rival.registry_moved(
            client, cached, (model_name, reward_model_name), (policy_dir, rm["model_dir"])
        ),
        candidate=candidate,
        model_name=model_name,
        reward_model_name=reward_model_name,
        policy_dir=policy_dir,
        rm_dir=rm["model_dir"],
        sft_dir=sft_out["model_dir"],
        eval_cfg=params.stage("evaluation"),
        lineage=lineage,
        policy_metrics=policy_metrics,
        rm_metrics={k.split("/", 1)[1]: round(v, 4) for k, v in rm["metrics"].items()},
        candidate_note=ppo_selection.kept_start_note(candidate, models[candidate]["metrics"]),
        rm_lora=model_lineage.lora_lineage(params, "reward_model"),
        # the card says what the report says of the judge (scalars: in the stage's key)
        judge_trusted=result["judge"]["trustworthy"],
        judge_trust_reason=result["judge"]["trust_reason"],
    )
    if "registry" in stage.cached:  # its task ran in an earlier flow run, with the artifact
        registry.republish_gate(model_name, gate)
    decision = gate["decision"]  # a result cached before held_back was a field has none
    registry.tag_parent_run(gate["policy_version"], decision["promote"], decision.get("held_back"))
    get_run_logger().info(
        "registered %s v%s; gate (vs %s): %s",
        model_name,
        gate["policy_version"],
        gate["gate"]["incumbent"],
        gate["decision"]["reason"],
    )
    return gate | {"model_name": model_name}
