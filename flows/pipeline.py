"""The `rlhf_pipeline` Prefect flow: data -> (later stages) -> report.

One MLflow parent run per pipeline run, tagged with the git commit, the DVC
data md5 and the Prefect flow-run id; each stage opens a nested run. A stage
found in Prefect's cache still gets a nested run (tagged cached=true, with
the metrics of the run that computed it) so MLflow reads the same either way.
"""

import time
from concurrent.futures import Future
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from instructflow.flows import approval, explained_errors, own_data, params_io
from instructflow.flows.params import PipelineParams
from instructflow.flows.publish import publish
from instructflow.flows.stages import Stages, note_kept_start, run_stage, with_every_stage
from instructflow.tasks import (
    base_model,
    comparisons,
    data,
    env,
    evaluation,
    fewshot_shown,
    interrupts,
    judge,
    judge_trust,
    launch,
    lifecycle,
    model_lineage,
    outages,
    ppo_selection,
    preflight,
    provenance,
    registry,
    registry_rival,
    report,
    report_training,
    reward_model,
    run_status,
    sft,
    task_run_states,
    tracking,
    worker_exit,
)
from instructflow.tasks.paths import project_root


@flow(name="rlhf_pipeline", log_prints=True, persist_result=False)  # no raw result artifact
@run_status.failure_report
def rlhf_pipeline(
    params: PipelineParams = PipelineParams(), sweep_run_id: str | None = None
) -> dict:
    """Run the InstructGPT pipeline on the embedded world (or your data) and write the report.

    Args:
        params: The run's settings; each field says what it does and its allowed range.
        sweep_run_id: Leave empty. `instructflow sweep` sets it to the MLflow run of the seed sweep this run belongs to (its parent).
    """
    logger = get_run_logger()
    # Run-time settings (tokenizers, DVC); Prefect's were fixed when it was imported.
    env.apply_defaults()
    worker_exit.outlive_worker()  # a worker's run goes on when the worker is killed
    worker_exit.stop_on_cancel(flow_run.id)  # `instructflow run` against a Prefect server
    explained_errors.keep_tracebacks_for_bugs()  # for a run a worker starts
    root = project_root()
    interrupts.reclaim()  # SIGINT/SIGTERM checkpoint and stop (instructflow run)
    outages.bound_mlflow_retries()
    outages.preflight(tracking.tracking_uri())
    experiment_id = tracking.setup()
    live = lifecycle.start_run(experiment_id, logger, on_dataset=bool(params.data))
    threads = provenance.pin_threads(params.threads)["threads"]  # before any torch work
    prov = provenance.collect(params.seed, processes=params.processes)
    run_info = {
        "profile": params.profile,
        "seed": params.seed,
        "git_commit": tracking.git_commit(),
        "prefect_flow_run_id": str(flow_run.id or ""),
    }
    if not params.data:  # the embedded world's version; a dataset run has its md5s instead
        run_info |= run_status.data_version(root / "data" / params.profile)
    tags = {k: str(v) for k, v in run_info.items()} | provenance.mlflow_tags(prov) | live
    with (
        task_run_states.settled_at_end(flow_run.id),  # ends a lost Prefect server missed
        lifecycle.ended(live) as holds_token,
        mlflow.start_run(
            run_name=f"rlhf-{params.profile}-seed{params.seed}-{flow_run.name}",  # as in Prefect
            tags=tags,
            parent_run_id=sweep_run_id,
            nested=sweep_run_id is not None,
        ) as parent,
        tracking.closing_run(),
    ):
        parent_id = parent.info.run_id
        holds_token(parent_id)  # taken off it once the run has ended
        url = env.mlflow_run_url(experiment_id, parent_id)  # where a person opens it
        run_status.begin({"mlflow_run_id": parent_id, **run_info}, prov)
        params_io.record_settings(params, threads)  # MLflow params, a Prefect table
        mlflow.log_dict(prov, "provenance.json")
        base_model_dir, refusal = preflight.local_base_model(params)
        if refusal:  # from the Prefect form: the CLI asked before the flow started
            return preflight.refuse(refusal)
        launch.warn_dropout_differs(params.processes, base_model_dir)  # said once per process

        if params.data:  # a user's dataset: its own path through the same stages
            local = params.model_copy(update={"base_model": base_model_dir})
            return own_data.run(local, parent_id, run_info, url, threads)

        profile_dir = root / "data" / params.profile
        # stage seconds, cache hits and keys (the report's run block), the data stage's too
        stage = Stages(params, profile_dir, parent_id, threads)
        checked = _data(root, params, base_model_dir, stage)
        if checked["refusal"]:
            return preflight.refuse(checked["refusal"])
        models = _models(stage, params, {"data_md5": checked["version"]["md5"]}, base_model_dir)
        policies = _policies(models, profile_dir, params)
        evaluated = _evaluate(stage, models, policies)

        # stage_seconds and cached_stages again once the registry stage has run (below)
        result = report.empty_report(
            {
                "mlflow_run_id": parent_id,
                **run_info,
                "dvc_data_md5": checked["version"]["md5"],
                "data_mismatch": not checked["version"]["matches_dvc"],  # --allow-data-mismatch
                "stage_seconds": dict(stage.timings),
                "cached_stages": sorted(stage.cached),  # those seconds are a cache look-up's
                "settings": params_io.settings_you_set(params),  # off the profile's defaults
            }
        )
        result["provenance"] = prov
        _fill_report(result, checked["summary"], models, policies, evaluated)
        if shortfall := fewshot_shown.world_shortfall(profile_dir, params.stage("evaluation")):
            logger.warning(fewshot_shown.shortfall_text(shortfall))  # as on a dataset
            result["fewshot_shortfall"] = shortfall  # base_fewshot's row: fewer than asked
        result["run"]["stage_keys"] = with_every_stage(result["run"]["stage_keys"], stage.keys)
        floor = params.stage("gate").judge_accuracy_floor  # the gate's: one verdict on the judge
        judged = models["judge"]["metrics"], evaluated.get("judge_agreement")
        result["judge"] = judge_trust.report_block(*judged, floor=floor)
        run_status.partial(result)  # a failure from here on reports what was evaluated
        figures = evaluation.flat_metrics(evaluated["rows"])
        tracking.log_final_metrics(parent_id, figures | judge_trust.parent_metrics(result["judge"]))

        run_info = run_info | {"mlflow_parent_run_url": url}
        gate = _registry(stage, params, models, policies, evaluated, result, run_info)
        result["run"]["stage_seconds"] = dict(stage.timings)  # the registry stage's now too
        result["run"]["cached_stages"] = sorted(stage.cached)
        links = [url, env.mlflow_run_url(experiment_id, gate["mlflow_run_id"])]
        result["gate"] = approval.after_gate(
            params.gate,
            gate["model_name"],
            gate["gate"],
            params.candidate,
            result["policies"],
            links,
        )
        note_kept_start(result["gate"], params.candidate, models[params.candidate]["metrics"])
        result["status"] = "completed"  # a failure before here: run_status.failure_report
        plotted = [Path(evaluated["dir"]) / f for f in evaluated["plots"]]
        publish(result, plotted, url)
    return result


def _data(root: Path, params: PipelineParams, base_model_dir, stage: Stages) -> dict:
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


def _key(result: dict, field: str = "model_dir") -> str:
    """The cache key of the stage that produced `result` (the name of its output folder)."""
    path = Path(result[field])
    return (path.parent if field == "model_dir" else path).name


def _models(stage: Stages, params: PipelineParams, data_in: dict, base_model_dir) -> dict:
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
    base_in = data_in | {"base": _key(base)}

    def preference_chain(lane: Stages) -> dict:
        sft_out = lane(
            sft.sft_task, "sft", "sft", base_in, variant="sft", model_dir=base["model_dir"]
        )
        sft_in, sft_dir = base_in | {"sft": _key(sft_out)}, sft_out["model_dir"]
        comps = lane(
            comparisons.comparisons_task, "comparisons", "comparisons", sft_in, sft_dir=sft_dir
        )
        comps_in = sft_in | {"comparisons": _key(comps, "dir")}
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
            "rm_inputs": sft_in | {"rm": _key(rm)},
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


def _policies(models: dict, profile_dir: Path, params: PipelineParams) -> dict[str, dict]:
    """The seven policies evaluated: base (zero- and few-shot), FLAN, T0, SFT, PPO, PPO-ptx."""
    fewshot = evaluation.fewshot_prefix(profile_dir, params.stage("evaluation").fewshot_examples)
    base_dir = models["base"]["model_dir"]
    return {
        "base": {"model_dir": base_dir},
        "base_fewshot": {"model_dir": base_dir, "prefix": fewshot},
        **{
            name: {"model_dir": models[name]["model_dir"]}
            for name in ("flan", "t0", "sft", "ppo", "ppo_ptx")
        },
    }


def _policy_keys(policies: dict[str, dict]) -> dict[str, str]:
    return {name: _key(p) for name, p in policies.items()}


def _evaluate(stage: Stages, models: dict, policies: dict[str, dict]) -> dict:
    """Every policy on test users' prompts: gold, held-out labelers, public suite, judge."""
    return stage(
        evaluation.evaluation_task,
        "evaluation",
        "evaluation",
        models["rm_inputs"] | _policy_keys(policies) | {"judge": _key(models["judge"], "dir")},
        policies=policies,
        sft_dir=models["sft"]["model_dir"],
        rm_dir=models["rm"]["model_dir"],
        judge_dir=models["judge"]["dir"],
        lanes=stage.lanes(),  # the policies in two halves side by side
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


def _fill_report(result: dict, summary: dict, models: dict, policies, evaluated: dict) -> None:
    """The report's labelers, reward model, policies and training blocks, and the stage keys."""
    rm_metrics = models["rm"]["metrics"]
    result["run"]["stage_keys"] = _policy_keys(policies) | {
        "reward_model": models["rm_inputs"]["rm"],
        "judge": _key(models["judge"], "dir"),
        "evaluation": _key(evaluated, "dir"),
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


def _registry(stage: Stages, params: PipelineParams, models, policies, evaluated, result, run_info):
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
            "policy": _policy_keys(policies)[candidate],
            "evaluation": _key(evaluated, "dir"),
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
    registry.tag_parent_run(gate["policy_version"], gate["decision"]["promote"])
    get_run_logger().info(
        "registered %s v%s; gate (vs %s): %s",
        model_name,
        gate["policy_version"],
        gate["gate"]["incumbent"],
        gate["decision"]["reason"],
    )
    return gate | {"model_name": model_name}
