"""The `rlhf_pipeline` Prefect flow: data -> (later stages) -> report.

One MLflow parent run per pipeline run, tagged with the git commit, the DVC
data md5 and the Prefect flow-run id; each stage opens a nested run. A stage
found in Prefect's cache still gets a nested run (tagged cached=true, with
the metrics of the run that computed it) so MLflow reads the same either way.
"""

import os
import shutil
import time
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from instructflow.flows import approval, own_data
from instructflow.flows.params import PipelineParams
from instructflow.flows.stages import Stages, run_stage
from instructflow.models.hub import resolve_pretrained
from instructflow.tasks import (
    base_model,
    comparisons,
    data,
    env,
    evaluation,
    interrupts,
    judge,
    judge_trust,
    lifecycle,
    outages,
    plots,
    ppo,
    preflight,
    provenance,
    registry,
    report,
    reward_model,
    run_status,
    sft,
    tracking,
)
from instructflow.tasks.paths import project_root, reports_dir


def mlflow_run_url(experiment_id: str, run_id: str) -> str:
    """Where a person opens this run: the tracking server, or the one `make serve` starts."""
    uri = tracking.tracking_uri()
    base = os.environ.get("INSTRUCTFLOW_MLFLOW_UI") or (
        uri if uri.startswith("http") else "http://127.0.0.1:5000"
    )
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


@flow(name="rlhf_pipeline", log_prints=True)
@run_status.failure_report
def rlhf_pipeline(
    params: PipelineParams = PipelineParams(), sweep_run_id: str | None = None
) -> dict:
    """Run the InstructGPT pipeline on the embedded world (or your data) and write the report.

    sweep_run_id: the MLflow run of a seed sweep this run belongs to (its parent); empty otherwise.
    """
    logger = get_run_logger()
    # What is read at run time (tokenizers, DVC); Prefect's own settings were fixed when
    # it was imported, by the CLI or, in a deployment run, by the worker's environment.
    env.apply_defaults()
    root = project_root()
    interrupts.reclaim()  # SIGINT/SIGTERM checkpoint and stop (instructflow run)
    outages.bound_mlflow_retries()
    outages.preflight(tracking.tracking_uri())
    # A Hub id becomes its cached local snapshot (its commit is in the path, hence in the
    # cache key); a missing model fails now, before any stage runs.
    base_model_dir = (
        str(resolve_pretrained(params.base_model, params.base_model_revision))
        if params.base_model
        else None
    )
    experiment_id = tracking.setup()
    live = lifecycle.start_run(experiment_id, logger)
    threads = provenance.pin_threads(params.threads)["threads"]  # before any torch work
    prov = provenance.collect(params.seed, processes=params.processes)
    run_info = {
        "profile": params.profile,
        "seed": params.seed,
        "git_commit": tracking.git_commit(),
        "prefect_flow_run_id": str(flow_run.id or ""),
    }
    run_info |= run_status.data_version(root / "data" / params.profile)
    tags = {k: str(v) for k, v in run_info.items()} | provenance.mlflow_tags(prov) | live
    with (
        lifecycle.ended(live),
        mlflow.start_run(
            run_name=f"rlhf-{params.profile}-seed{params.seed}",
            tags=tags,
            parent_run_id=sweep_run_id,
            nested=sweep_run_id is not None,
        ) as parent,
        tracking.killed_on_interrupt(),
    ):
        parent_id = parent.info.run_id
        run_status.begin({"mlflow_run_id": parent_id, **run_info})
        mlflow.log_params(
            {
                "profile": params.profile,
                "seed": params.seed,
                "threads": threads,
                "base_model": params.base_model or "embedded",
            }
        )
        mlflow.log_dict(prov, "provenance.json")

        if params.data:  # a user's dataset: its own path through the same stages
            url = mlflow_run_url(experiment_id, parent_id)
            local = params.model_copy(update={"base_model": base_model_dir})
            return own_data.run(local, parent_id, run_info, url, threads)

        timings: dict[str, float] = {}  # stage -> wall seconds (report: run.stage_seconds)
        started = time.perf_counter()
        # Every input checked before any training; a refusal fails the run here (no retry).
        checked = preflight.preflight_task(
            str(root), params.model_copy(update={"base_model": base_model_dir})
        )
        if checked["refusal"]:
            return preflight.refuse(checked["refusal"])
        version = checked["version"]
        timings["data_restore"] = round(time.perf_counter() - started, 2)
        mlflow.log_metric("stage_seconds/data_restore", timings["data_restore"])
        mlflow.set_tags(
            {
                "dvc_data_md5": version["md5"],
                "data_mismatch": str(not version["matches_dvc"]).lower(),
            }
        )
        logger.info("data/ is DVC version %s (%s)", version["md5"], version["restored_by"])
        summary = run_stage(
            data.validate_data_task,
            "data",
            config={"profile": params.profile},
            inputs={"data_md5": version["md5"]},
            parent_run_id=parent_id,
            timings=timings,
            profile_dir=str(root / "data" / params.profile),
            md5=version["md5"],
        )

        profile_dir = str(root / "data" / params.profile)
        data_in = {"data_md5": version["md5"]}

        stage = Stages(params, Path(profile_dir), parent_id, threads, timings)

        base = stage(
            base_model.base_model_task, "base_model", "base", data_in, base_model=base_model_dir
        )
        base_in = data_in | {"base": Path(base["model_dir"]).parent.name}
        sft_out = stage(
            sft.sft_task, "sft", "sft", base_in, variant="sft", model_dir=base["model_dir"]
        )
        sft_in = base_in | {"sft": Path(sft_out["model_dir"]).parent.name}
        comps = stage(
            comparisons.comparisons_task,
            "comparisons",
            "comparisons",
            sft_in,
            sft_dir=sft_out["model_dir"],
        )
        rm = stage(
            reward_model.reward_model_task,
            "reward_model",
            "reward_model",
            sft_in | {"comparisons": Path(comps["dir"]).name},
            sft_dir=sft_out["model_dir"],
            comparisons_dir=comps["dir"],
        )
        rm_in = sft_in | {"rm": Path(rm["model_dir"]).parent.name}
        # A second reward model, on held-out preferences only: judges where gold cannot.
        held_out_judge = stage(
            judge.judge_task,
            "judge",
            "judge",
            sft_in | {"comparisons": Path(comps["dir"]).name},
            sft_dir=sft_out["model_dir"],
            comparisons_dir=comps["dir"],
        )
        ppo_runs = {
            name: stage(
                ppo.ppo_task,
                name,
                "ppo",
                rm_in,
                stage=name,
                sft_dir=sft_out["model_dir"],
                rm_dir=rm["model_dir"],
                ptx_gamma=gamma,
            )
            for name, gamma in (("ppo", 0.0), ("ppo_ptx", params.ptx_gamma))
        }
        flan = stage(
            sft.sft_task, "flan", "baselines", base_in, variant="flan", model_dir=base["model_dir"]
        )
        t0 = stage(
            sft.sft_task, "t0", "baselines", base_in, variant="t0", model_dir=base["model_dir"]
        )

        policies = {
            "base": {"model_dir": base["model_dir"]},
            "base_fewshot": {
                "model_dir": base["model_dir"],
                "prefix": evaluation.fewshot_prefix(
                    Path(profile_dir), params.stage("evaluation").fewshot_examples
                ),
            },
            "flan": {"model_dir": flan["model_dir"]},
            "t0": {"model_dir": t0["model_dir"]},
            "sft": {"model_dir": sft_out["model_dir"]},
            **{name: {"model_dir": out["model_dir"]} for name, out in ppo_runs.items()},
        }
        policy_keys = {name: Path(p["model_dir"]).parent.name for name, p in policies.items()}
        evaluated = stage(
            evaluation.evaluation_task,
            "evaluation",
            "evaluation",
            rm_in | policy_keys | {"judge": Path(held_out_judge["dir"]).name},
            policies=policies,
            sft_dir=sft_out["model_dir"],
            rm_dir=rm["model_dir"],
            judge_dir=held_out_judge["dir"],
        )

        # The registry stage runs after the report is written: its seconds are in MLflow only.
        result = report.empty_report(
            {
                "mlflow_run_id": parent_id,
                **run_info,
                "dvc_data_md5": version["md5"],
                "stage_seconds": dict(timings),
            }
        )
        result["provenance"] = prov
        result["run"]["stage_keys"] = policy_keys | {
            "reward_model": rm_in["rm"],
            "evaluation": Path(evaluated["dir"]).name,
        }
        result["labelers"] = {"pairwise_agreement": summary["labeler_agreement"]}
        result["reward_model"] = {
            "accuracy_heldout_labels": rm["metrics"]["rm/accuracy_heldout_labels"],
            "accuracy_vs_gold": rm["metrics"]["rm/accuracy_vs_gold"],
            "accuracy_vs_gold_by_family": {
                name.removeprefix(reward_model.BY_FAMILY_PREFIX): value
                for name, value in rm["metrics"].items()
                if name.startswith(reward_model.BY_FAMILY_PREFIX)
            },
        }
        result["policies"] = evaluated["rows"]
        result["judge"] = judge_trust.report_block(
            held_out_judge["metrics"], evaluated.get("judge_agreement")
        )
        run_status.partial(result)  # a failure from here on reports what was evaluated
        tracking.log_metrics(evaluation.flat_metrics(evaluated["rows"]))
        tracking.log_metrics(judge_trust.parent_metrics(result["judge"]))

        candidate = params.candidate
        lineage = {
            "dvc_data_md5": version["md5"],
            "git_commit": run_info["git_commit"],
            "prefect_flow_run_id": run_info["prefect_flow_run_id"],
            "prefect_flow_run_url": approval.flow_run_page(),  # the model card links it
            "mlflow_parent_run_id": parent_id,
            "profile": params.profile,
            "seed": params.seed,
            "base_model": params.base_model or f"embedded GPT-2 ({params.profile})",
            "sft_run_id": sft_out["mlflow_run_id"],  # the reference SFT's run (later evaluations)
        }
        policy_metrics = {
            k.split("/", 2)[2]: round(v, 4)
            for k, v in evaluation.flat_metrics({candidate: result["policies"][candidate]}).items()
        }
        model_name, reward_model_name = params.registry.names(params.profile)
        gate = stage(
            registry.register_and_gate_task,
            "registry",
            "gate",
            rm_in
            | {
                "policy": policy_keys[candidate],
                "evaluation": Path(evaluated["dir"]).name,
                "gate_opponent": registry.gate_opponent(
                    MlflowClient(), policies[candidate]["model_dir"], model_name
                ),
            },
            candidate=candidate,
            model_name=model_name,
            reward_model_name=reward_model_name,
            policy_dir=policies[candidate]["model_dir"],
            rm_dir=rm["model_dir"],
            sft_dir=sft_out["model_dir"],
            eval_cfg=params.stage("evaluation"),
            lineage=lineage,
            policy_metrics=policy_metrics,
            rm_metrics={k.split("/", 1)[1]: round(v, 4) for k, v in rm["metrics"].items()},
        )
        mlflow.set_tags(
            {
                "policy_version": gate["policy_version"],
                "gate_decision": "promoted" if gate["decision"]["promote"] else "rejected",
            }
        )
        logger.info(
            "registered %s v%s; gate (vs %s): %s",
            model_name,
            gate["policy_version"],
            gate["gate"]["incumbent"],
            gate["decision"]["reason"],
        )
        links = [mlflow_run_url(experiment_id, r) for r in (parent_id, gate["mlflow_run_id"])]
        result["gate"] = approval.after_gate(
            params.gate, model_name, gate, candidate, result["policies"], links
        )
        result["status"] = "completed"  # a failure before here: run_status.failure_report
        url = mlflow_run_url(experiment_id, parent_id)
        staging = reports_dir() / ".staging" / parent_id
        figures = plots.report_plots(result["policies"], staging)
        markdown = report.to_markdown(result, mlflow_url=url, plots=[str(f) for f in figures])
        run_dir = report.write_report(result, reports_dir(), markdown, extra_files=figures)
        report.publish_latest(run_dir, reports_dir())
        shutil.rmtree(staging, ignore_errors=True)
        mlflow.log_artifacts(str(run_dir), artifact_path="report")
        create_markdown_artifact(
            markdown=markdown, key="rlhf-report", description=f"instructflow run {parent_id}"
        )
        create_table_artifact(
            table=report.table_rows(result),
            key="rlhf-policies",
            description="Policies on test users",
        )
        logger.info("report: %s  MLflow: %s", reports_dir() / "latest" / "report.json", url)
    return result
