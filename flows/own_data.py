"""The pipeline on a user's dataset (`--data DIR`): the same stages, fed from the dataset, judged without gold.

data (import: validate, normalise, split) -> base model -> SFT -> comparisons
(the dataset's preferences; no sampling, no simulated labelers) -> reward
model and held-out judge (instructflow.tasks.judge: the test split's preferences only) ->
PPO, PPO-ptx (skipped without pretraining text) -> FLAN/T0 baselines (skipped
without mixtures) -> evaluation (no gold; win rates from the held-out judge)
-> report -> registry (challenger, tagged with the dataset's per-table md5s).

Each stage's cache key holds the content digest of the files it reads from
the imported tables, so a dataset that gained preferences re-runs
comparisons -> RM -> PPO -> evaluation, while the base model, SFT (its
demonstrations did not change) and the baselines come from the cache.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import mlflow
from prefect import get_run_logger

from instructflow.flows import approval, dataset_gate, explained_errors, params_io
from instructflow.flows.own_data_checks import NEEDS_BASE, max_new_tokens
from instructflow.flows.params import PipelineParams
from instructflow.flows.publish import publish
from instructflow.flows.stages import Stages, note_kept_start, run_stage, with_every_stage
from instructflow.tasks import (
    base_model,
    dataset_stage,
    env,
    judge,
    judge_trust,
    own_evaluation,
    ppo_selection,
    provenance,
    registry,
    report,
    report_training,
    reward_model,
    run_status,
    sft,
    tracking,
)
from instructflow.tasks.conversations import READABLE_PROMPTS
from instructflow.tasks.dataset_dvc import version_tags
from instructflow.tasks.dataset_files import missing_folder
from instructflow.tasks.evaluation import flat_metrics
from instructflow.tasks.fewshot_own import fewshot_prefix_that_fits, fewshot_shortfall
from instructflow.tasks.fewshot_shown import mlflow_tags, shortfall_text
from instructflow.tasks.lora_checks import lora_target_problems, model_config
from instructflow.tasks.preflight import InputRefused, refuse, refused
from instructflow.tasks.runtime_checks import runtime_problems
from instructflow.tasks.splits import held_out_group
from instructflow.tasks.stage import content_digest
from instructflow.tasks.tables import TableError
from instructflow.world import layout

NO_PRETRAIN = "skipped: the dataset has no pretrain table (PPO-ptx mixes pretraining text into PPO)"
NO_MIXTURE = "skipped: the dataset has no {name} table (a FLAN/T0-style baseline fine-tunes on it)"


def _imported(params: PipelineParams, stage: Stages) -> dict:
    """The checks a run from the Prefect form or API (no CLI preflight) needs, then the
    import stage (its seconds, cache hit and key recorded in `stage`): its output, with the
    dataset's folder, its DVC md5 and the base model's digest. Raises bad input (an
    explained error: no traceback), which `run` refuses."""
    if not params.base_model:
        raise InputRefused(NEEDS_BASE)
    if (missing := missing_folder(Path(params.data))) is not None:
        raise TableError([missing])
    data_dir = Path(params.data).resolve()
    problems = lora_target_problems(params, model_config(params.base_model))
    if problems := problems + runtime_problems(params):
        raise TableError(problems)  # a run from the Prefect form skips the CLI's preflight
    table_md5s = {
        p.name: content_digest(p)
        for p in sorted(data_dir.iterdir())
        if p.suffix in (".jsonl", ".parquet")
    }
    dvc_tags = version_tags(data_dir, params.allow_data_mismatch)
    mlflow.set_tags(dvc_tags)
    run_status.describe({"data_dir": str(data_dir), "dvc_data_md5": dvc_tags["dvc_data_md5"]})
    tracking.log_data_version(data_dir.name, data_dir, dvc_tags["dvc_data_md5"])
    base_digest = content_digest(params.base_model)
    imported = run_stage(
        dataset_stage.import_dataset_task,
        "data",
        {
            "dataset": params.dataset.model_dump(),
            "max_new_tokens": max_new_tokens(params),
            "ptx_block_size": params.stage("ppo").ptx_block_size,
        },
        {"tables": table_md5s, "base_model": base_digest},
        stage.parent_run_id,
        stage.timings,
        cached=stage.cached,
        keys=stage.keys,
        data_dir=str(data_dir),
        base_model=params.base_model,
        cfg=params.dataset,
        max_new_tokens=max_new_tokens(params),
        tables=table_md5s,  # what the key holds (not a key argument: not a scalar)
        ptx_block_size=params.stage("ppo").ptx_block_size,
    )
    return imported | {
        "data_dir": data_dir,
        "dvc_data_md5": dvc_tags["dvc_data_md5"],
        "data_mismatch": dvc_tags.get("data_mismatch") == "true",  # --allow-data-mismatch
        "base_digest": base_digest,
    }


def _digests(profile_dir: Path, *rels: str) -> dict[str, str | None]:
    """Content digest of each table a stage reads (None when the dataset has no such table)."""
    return {
        rel: content_digest(profile_dir / rel) if (profile_dir / rel).exists() else None
        for rel in rels
    }


def run(
    params: PipelineParams, parent_id: str, run_info: dict, mlflow_url: str, threads: int
) -> dict:
    """The stages on `params.data` inside the running flow and MLflow parent run; returns the
    report, or the Failed state of a refusal before training (preflight.refuse)."""
    logger = get_run_logger()
    # stage seconds, cache hits and keys (the report's run block); the data folder is the
    # import stage's, below
    stage = Stages(params, Path(), parent_id, threads)
    try:
        imported = _imported(params, stage)
    except explained_errors.bad_input_errors() as error:  # as the CLI and the embedded world say
        return refuse(refused(error))
    data_dir, base_digest = imported["data_dir"], imported["base_digest"]
    summary = imported["summary"]
    profile_dir = Path(imported["profile_dir"])
    md5s = {name: t["md5"] for name, t in summary["tables"].items()}
    mlflow.set_tags({"data_dir": str(data_dir)} | {f"data_md5/{n}": m for n, m in md5s.items()})
    skipped: dict[str, str] = {}

    stage = replace(stage, profile_dir=profile_dir)  # the same seconds, cache hits and keys

    pretrain_in = _digests(profile_dir, layout.PRETRAIN_TRAIN, layout.PRETRAIN_VALID)
    base = stage(
        base_model.base_model_task,
        "base_model",
        "base",
        {"base_model": base_digest},  # a copy of the given model (no pretraining on a dataset)
        base_model=params.base_model,
    )
    base_in = {"base": Path(base["model_dir"]).parent.name}
    sft_out = stage(
        sft.sft_task,
        "sft",
        "sft",
        base_in | _digests(profile_dir, layout.SFT_TRAIN, layout.SFT_VALID),
        variant="sft",
        model_dir=base["model_dir"],
    )
    sft_in = base_in | {"sft": Path(sft_out["model_dir"]).parent.name}
    comps = run_stage(
        dataset_stage.comparisons_task,
        "comparisons",
        None,
        {"comparisons": content_digest(profile_dir / "comparisons")},
        parent_id,
        stage.timings,
        cached=stage.cached,
        keys=stage.keys,
        profile_dir=str(profile_dir),
    )
    rm = stage(
        reward_model.reward_model_task,
        "reward_model",
        "reward_model",
        sft_in
        | {"comparisons": Path(comps["dir"]).name}
        | _digests(profile_dir, layout.SFT_TRAIN, layout.EVAL_TEST),
        sft_dir=sft_out["model_dir"],
        comparisons_dir=comps["dir"],
    )
    rm_in = sft_in | {"rm": Path(rm["model_dir"]).parent.name}
    # The held-out judge: a second RM trained on the test split's preferences only. The same
    # people may have ranked both splits, so labelers need not differ (users or prompts do).
    judged = stage(
        judge.judge_task,
        "judge",
        "judge",
        sft_in | {"comparisons": Path(comps["dir"]).name},
        sft_dir=sft_out["model_dir"],
        comparisons_dir=comps["dir"],
        distinct_labelers=False,
    )
    ppo_in = rm_in | _digests(profile_dir, layout.PPO_TRAIN, layout.PPO_VALID) | pretrain_in
    variants = [("ppo", 0.0)]
    if pretrain_in[layout.PRETRAIN_TRAIN]:
        variants.append(("ppo_ptx", params.ptx_gamma))
    else:
        skipped["ppo_ptx"] = NO_PRETRAIN
    ppo_runs = {}
    for name, gamma in variants:
        ppo_runs |= stage.ppo(name, gamma, ppo_in, sft_out["model_dir"], rm["model_dir"])
    evaluation = params.stage("evaluation")
    fits = dataset_stage.length_check(params.base_model, evaluation.max_new_tokens)
    asked = evaluation.fewshot_examples
    prefix, shown = fewshot_prefix_that_fits(profile_dir, asked, fits)
    # fewer shown than asked is another baseline: the report says so beside its figures too
    shortfall, skip = fewshot_shortfall(profile_dir, asked, shown, fits.max_len)
    if shortfall:
        logger.warning(shortfall_text(shortfall))
        mlflow.set_tags(mlflow_tags(shortfall))  # the parent run's, for filtering runs
    policies = {
        "base": {"model_dir": base["model_dir"]},
        "base_fewshot": {"model_dir": base["model_dir"], "prefix": prefix},
        "sft": {"model_dir": sft_out["model_dir"]},
        **{name: {"model_dir": out["model_dir"]} for name, out in ppo_runs.items()},
    }
    if skip:  # no prefix: base_fewshot would be base again
        skipped["base_fewshot"] = skip
        del policies["base_fewshot"]
    for name, rel in (("flan", layout.FLAN_MIXTURE), ("t0", layout.T0_MIXTURE)):
        if not (profile_dir / rel).exists():
            skipped[name] = NO_MIXTURE.format(name=name)
            continue
        out = stage(
            sft.sft_task,
            name,
            "baselines",
            base_in | _digests(profile_dir, rel),
            variant=name,
            model_dir=base["model_dir"],
        )
        policies[name] = {"model_dir": out["model_dir"]}
    for name, reason in skipped.items():
        logger.info("%s %s", name, reason)

    policy_keys = {name: Path(p["model_dir"]).parent.name for name, p in policies.items()}
    floor = params.stage("gate").judge_accuracy_floor  # the gate's: one verdict on the judge
    evaluated = stage(
        own_evaluation.evaluation_task,
        "evaluation",
        "evaluation",
        rm_in
        | policy_keys
        | {"judge": Path(judged["dir"]).name}
        | _digests(profile_dir, layout.EVAL_TEST, READABLE_PROMPTS, layout.PRETRAIN_VALID),
        policies=policies,
        sft_dir=sft_out["model_dir"],
        rm_dir=rm["model_dir"],
        judge_dir=judged["dir"],
        # The gate's verdict on the judge, on its plots too (the report's judge block says it).
        judge_warning=judge_trust.untrusted_caption(judged["metrics"], floor),
        held_out=held_out_group(summary["split_rule"]),  # whom its plots' titles name
    )

    result = report.empty_report(
        {
            "mlflow_run_id": parent_id,
            **run_info,
            "data_dir": str(data_dir),
            "dvc_data_md5": imported["dvc_data_md5"],
            "data_mismatch": imported["data_mismatch"],
            "stage_seconds": stage.timings,
            "cached_stages": sorted(stage.cached),  # those seconds are a cache look-up's
            "settings": params_io.settings_you_set(params),  # off the profile's defaults
            # where each policy, the RM, the judge and the evaluation are (`instructflow
            # evaluate`, sweeps, `compare`: whether two runs had the same judge); then the
            # other stages' keys (the import's, the comparisons'), for report.md's table
            "stage_keys": with_every_stage(
                policy_keys
                | {
                    "reward_model": rm_in["rm"],
                    "judge": Path(judged["dir"]).name,
                    "evaluation": Path(evaluated["dir"]).name,
                },
                stage.keys,
            ),
        }
    )
    # No simulated labelers on a dataset: an empty block would read like a measurement of none.
    del result["labelers"]
    # Where it was made: machine, software, threads, processes, seed, commit.
    result["provenance"] = provenance.collect(params.seed, processes=params.processes)
    result["dataset"] = summary
    result["skipped"] = skipped
    if shortfall:  # left out when base_fewshot shows all asked for, or is skipped
        result["fewshot_shortfall"] = shortfall
    result["judge"] = judge_trust.report_block(judged["metrics"], None, floor=floor)
    result["reward_model"] = {k.split("/", 1)[1]: v for k, v in rm["metrics"].items()}
    trained = {"sft": sft_out, "reward_model": rm} | ppo_runs
    result["training"] = report_training.training_block(
        {k: v["metrics"] for k, v in trained.items()}
    )
    result["policies"] = evaluated["rows"]
    # The parent run's figures, as on the embedded world: every policy's, then the judge's.
    figures = flat_metrics(evaluated["rows"]) | judge_trust.parent_metrics(result["judge"])
    tracking.log_final_metrics(parent_id, figures)
    candidate = params.candidate if params.candidate in policies else "ppo"
    inputs = dataset_gate.GateInputs(
        candidate=candidate,
        policy_dir=policies[candidate]["model_dir"],
        rm_dir=rm["model_dir"],
        sft_run_id=sft_out["mlflow_run_id"],
        profile_dir=profile_dir,
        judge_dir=Path(judged["dir"]),
        candidate_note=ppo_selection.kept_start_note(
            candidate, ppo_runs.get(candidate, {}).get("metrics", {})
        ),
        sft_dir=sft_out["model_dir"],
    )
    run_status.at_stage("registry")
    started = time.perf_counter()
    gate, gate_run = dataset_gate.register_and_gate(params, result, inputs)
    seconds = round(time.perf_counter() - started, 2)
    tracking.log_stage_seconds(parent_id, "registry", seconds)
    result["run"]["stage_seconds"] = {**result["run"]["stage_seconds"], "registry": seconds}
    registry.tag_parent_run(gate["policy_version"], gate["promote"], gate.get("held_back"))
    gate = result["gate"] = approval.after_gate(
        params.stage("gate"),
        gate["model_name"],
        gate,
        candidate,
        result["policies"],
        [mlflow_url, env.mlflow_run_url(gate_run.info.experiment_id, gate_run.info.run_id)],
    )
    note_kept_start(gate, candidate, ppo_runs.get(candidate, {}).get("metrics", {}))
    logger.info(
        "registered %s v%s; gate (vs %s, %s): %s",
        gate["model_name"],
        gate["policy_version"],
        gate["incumbent"],
        gate["evidence"],
        gate["reason"],
    )
    if gate.get("note"):
        logger.warning("gate: %s", gate["note"])

    result["status"] = "completed"
    # The evaluation's plots beside report.md, as on the embedded world.
    plotted = [Path(evaluated["dir"]) / f for f in evaluated.get("plots", [])]
    publish(result, plotted, mlflow_url)  # report.md with its Dataset section
    return result
