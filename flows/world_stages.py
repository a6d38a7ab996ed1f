"""The embedded world's stages in the flow's order (flows/pipeline.py): every input checked,
then data, the models (two lanes side by side), and the evaluation of every policy.

Each stage goes through `Stages` (flows/stages.py), which records its seconds, cache hit
and key for the report's run block; the keys of earlier stages are the later ones' inputs.
"""

import time
from concurrent.futures import Future
from pathlib import Path

import mlflow
from prefect import get_run_logger

from instructflow.flows.params import PipelineParams
from instructflow.flows.stages import Stages, run_stage
from instructflow.tasks import (
    base_model,
    comparisons,
    data,
    evaluation,
    judge,
    preflight,
    reward_model,
    sft,
    tracking,
)


def checked_data(root: Path, params: PipelineParams, base_model_dir, stage: Stages) -> dict:
    """Every input checked before any training (preflight), then the data stage (its seconds,
    cache hit and key recorded in `stage`, as the other stages').

    Returns preflight's verdict: `refusal` (None when every input passed), the
    DVC `version` of data/ and, when it passed, the data stage's `summary`.
    """
    started = time.perf_counter()
    checked = preflight.preflight_task(
        str(root), params.model_copy(update={"base_model": base_model_dir})
    )
    if checked["refusal"]:  # the run fails here, with no retry
        return checked
    version, timings, parent_id = checked["version"], stage.timings, stage.parent_run_id
    timings["data_restore"] = round(time.perf_counter() - started, 2)
    tracking.log_stage_seconds(parent_id, "data_restore", timings["data_restore"])
    mlflow.set_tags(data.version_tags(version))
    get_run_logger().info(data.describe(version))
    tracking.log_data_version(
        f"world-{params.profile}", root / "data" / params.profile, version["md5"]
    )
    summary = run_stage(
        data.validate_data_task,
        "data",
        config={"profile": params.profile},
        inputs={"data_md5": version["md5"]},
        parent_run_id=parent_id,
        timings=timings,
        cached=stage.cached,
        keys=stage.keys,
        profile_dir=str(root / "data" / params.profile),
        md5=version["md5"],
    )
    return checked | {"summary": summary}


def stage_key(result: dict, field: str = "model_dir") -> str:
    """The cache key of the stage that produced `result` (the name of its output folder)."""
    path = Path(result[field])
    return (path.parent if field == "model_dir" else path).name


def trained_models(stage: Stages, params: PipelineParams, data_in: dict, base_model_dir) -> dict:
    """Base model, SFT, comparisons, reward model, held-out judge, PPO and PPO-ptx, and the
    FLAN- and T0-style baselines: each stage's result by name, and `rm_inputs` (the keys of
    the stages up to the RM, on which evaluation and the registry depend too).

    With 2+ threads the stages that do not depend on each other run side by side
    (`Stages.side_by_side`) in two lanes of about equal length: SFT -> comparisons
    -> RM -> judge -> PPO-ptx in one, FLAN -> T0 -> PPO in the other (PPO waits
    there for the first lane's RM, which on the tiny profile is ready before T0
    is done). One after the other, the first lane's stages run first.
    """
    base = stage(
        base_model.base_model_task, "base_model", "base", data_in, base_model=base_model_dir
    )
    base_in = data_in | {"base": stage_key(base)}

    def preference_chain(lane: Stages) -> dict:
        sft_out = lane(
            sft.sft_task, "sft", "sft", base_in, variant="sft", model_dir=base["model_dir"]
        )
        sft_in, sft_dir = base_in | {"sft": stage_key(sft_out)}, sft_out["model_dir"]
        comps = lane(
            comparisons.comparisons_task, "comparisons", "comparisons", sft_in, sft_dir=sft_dir
        )
        comps_in = sft_in | {"comparisons": stage_key(comps, "dir")}
        on_comparisons = {"sft_dir": sft_dir, "comparisons_dir": comps["dir"]}
        rm = lane(
            reward_model.reward_model_task,
            "reward_model",
            "reward_model",
            comps_in,
            **on_comparisons,
        )
        # A second reward model, on held-out preferences only: judges where gold cannot.
        held_out_judge = lane(judge.judge_task, "judge", "judge", comps_in, **on_comparisons)
        return {
            "sft": sft_out,
            "rm": rm,
            "judge": held_out_judge,
            "rm_inputs": sft_in | {"rm": stage_key(rm)},
        }

    def on_chain(lane: Stages, name: str, ptx_gamma: float, chain: dict) -> dict[str, dict]:
        sft_dir, rm_dir = chain["sft"]["model_dir"], chain["rm"]["model_dir"]
        return lane.ppo(name, ptx_gamma, chain["rm_inputs"], sft_dir, rm_dir)

    chain_done: Future = Future()  # the second lane's PPO needs the first lane's RM

    def preference_lane(lane: Stages) -> dict:
        try:
            chain = preference_chain(lane)
        except BaseException as error:
            chain_done.set_exception(error)  # the other lane stops waiting, and says why
            raise
        chain_done.set_result(chain)
        return chain | on_chain(lane, "ppo_ptx", params.ptx_gamma, chain)

    def baseline_lane(lane: Stages) -> dict:
        runs = {
            name: lane(
                sft.sft_task, name, "baselines", base_in, variant=name, model_dir=base["model_dir"]
            )
            for name in ("flan", "t0")
        }
        return runs | on_chain(lane, "ppo", 0.0, chain_done.result())

    first, second = stage.side_by_side(preference_lane, baseline_lane)
    return {"base": base, **first, **second}


def policies_to_evaluate(models: dict, fewshot_prefix: str) -> dict[str, dict]:
    """The seven policies evaluated: base (zero- and few-shot), FLAN, T0, SFT, PPO, PPO-ptx."""
    base_dir = models["base"]["model_dir"]
    return {
        "base": {"model_dir": base_dir},
        "base_fewshot": {"model_dir": base_dir, "prefix": fewshot_prefix},
        **{
            name: {"model_dir": models[name]["model_dir"]}
            for name in ("flan", "t0", "sft", "ppo", "ppo_ptx")
        },
    }


def policy_keys(policies: dict[str, dict]) -> dict[str, str]:
    return {name: stage_key(p) for name, p in policies.items()}


def evaluated_policies(stage: Stages, models: dict, policies: dict[str, dict]) -> dict:
    """Every policy on test users' prompts: gold, held-out labelers, public suite, judge."""
    return stage(
        evaluation.evaluation_task,
        "evaluation",
        "evaluation",
        models["rm_inputs"] | policy_keys(policies) | {"judge": stage_key(models["judge"], "dir")},
        policies=policies,
        sft_dir=models["sft"]["model_dir"],
        rm_dir=models["rm"]["model_dir"],
        judge_dir=models["judge"]["dir"],
        lanes=stage.lanes(),  # the policies in two halves side by side
    )
