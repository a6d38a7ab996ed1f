"""What a registered model's tags say of where it came from (its lineage).

The model card (tasks/model_card.py) shows these tags; the registry writes them on both the
policy's and the reward model's versions.
"""

from typing import Any

from instructflow.tasks import env


def pipeline_lineage(
    params: Any, run: dict, run_info: dict, candidate: str, sft_run_id: str
) -> dict[str, str]:
    """An embedded-world run's candidate: its data, code, runs (both pages linked), settings,
    and the LoRA merged into its weights (the RM's: lora_lineage(params, "reward_model"))."""
    return {
        "dvc_data_md5": run["dvc_data_md5"],
        **mismatch_lineage(run),
        "git_commit": run_info["git_commit"],
        "prefect_flow_run_id": run_info["prefect_flow_run_id"],
        "prefect_flow_run_url": env.prefect_flow_run_url(run_info["prefect_flow_run_id"]),
        "mlflow_parent_run_id": run["mlflow_run_id"],
        "mlflow_parent_run_url": run_info["mlflow_parent_run_url"],
        "profile": params.profile,
        "seed": params.seed,
        "base_model": params.base_model or f"embedded GPT-2 ({params.profile})",
        **lora_lineage(params, candidate),
        "sft_run_id": sft_run_id,  # the reference SFT's run (later evaluations)
    }


def mismatch_lineage(run: dict) -> dict[str, str]:
    """A version trained on data its commit's .dvc file does not record says so (tag
    `data_mismatch`): `dvc checkout` at that commit would restore other data."""
    return {"data_mismatch": "true"} if run.get("data_mismatch") else {}


# The training stages whose weights a registered model is made of, by model: PPO trains on
# from SFT's weights (the `sft` candidate is SFT's alone) and the reward model starts from
# SFT's weights too. The baselines (FLAN, T0) are in neither.
MERGED_STAGES = {
    "sft": ("sft",),
    "ppo": ("sft", "ppo"),
    "ppo_ptx": ("sft", "ppo"),  # the ptx variant trains under the ppo stage's settings
    "reward_model": ("sft", "reward_model"),
}


def lora_lineage(params: Any, model: str) -> dict[str, str]:
    """The stages whose LoRA adapters are merged into `model`'s weights (a candidate policy,
    or "reward_model": MERGED_STAGES) and their settings (tag `lora`): the registered weights
    are plain (adapters merged), so without it a version did not say it was LoRA-tuned."""
    used = []
    for stage in MERGED_STAGES[model]:
        lora = params.stage(stage).lora
        if lora is not None:
            targets = lora.target_modules
            on = (
                ""
                if targets is None
                else f" on {targets if isinstance(targets, str) else ', '.join(targets)}"
            )
            used.append(f"{stage} r={lora.r} alpha={lora.alpha}{on}")
    return {"lora": "; ".join(used)} if used else {}


def with_lora(lineage: dict, lora: dict[str, str]) -> dict:
    """`lineage` with another model's LoRA settings (a lora_lineage) in place of its own."""
    return {key: value for key, value in lineage.items() if key != "lora"} | lora
