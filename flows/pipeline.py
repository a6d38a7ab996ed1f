"""The `rlhf_pipeline` Prefect flow: data -> (later stages) -> report.

One MLflow parent run per pipeline run, tagged with the git commit, the DVC
data md5 and the Prefect flow-run id; each stage opens a nested run. A stage
found in Prefect's cache still gets a nested run (tagged cached=true, with
the metrics of the run that computed it) so MLflow reads the same either way.
"""

from pathlib import Path

import mlflow
from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from instructflow.flows import approval, explained_errors, own_data, params_io
from instructflow.flows.params import PipelineParams
from instructflow.flows.publish import publish
from instructflow.flows.stages import Stages, note_kept_start, with_every_stage
from instructflow.flows.world_results import fill_report, register_and_gate
from instructflow.flows.world_stages import (
    checked_data,
    evaluated_policies,
    policies_to_evaluate,
    trained_models,
)
from instructflow.tasks import (
    env,
    evaluation,
    fewshot_shown,
    flow_start_watch,
    interrupts,
    judge_trust,
    launch,
    lifecycle,
    outages,
    preflight,
    provenance,
    report,
    run_status,
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
    flow_start_watch.flow_started()  # `instructflow run` stops waiting to say it is slow
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
        checked = checked_data(root, params, base_model_dir, stage)
        if checked["refusal"]:
            return preflight.refuse(checked["refusal"])
        models = trained_models(
            stage, params, {"data_md5": checked["version"]["md5"]}, base_model_dir
        )
        # base_fewshot's demonstrations, and how many fewer than asked it shows (the report's)
        fewshot, shortfall = fewshot_shown.world_prefix(profile_dir, params.stage("evaluation"))
        policies = policies_to_evaluate(models, fewshot)
        evaluated = evaluated_policies(stage, models, policies)

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
        fill_report(result, checked["summary"], models, policies, evaluated)
        if shortfall:
            logger.warning(fewshot_shown.shortfall_text(shortfall))  # as on a dataset
            result["fewshot_shortfall"] = shortfall  # base_fewshot's row: fewer than asked
            mlflow.set_tags(fewshot_shown.mlflow_tags(shortfall))  # for filtering runs
        result["run"]["stage_keys"] = with_every_stage(result["run"]["stage_keys"], stage.keys)
        floor = params.stage("gate").judge_accuracy_floor  # the gate's: one verdict on the judge
        judged = models["judge"]["metrics"], evaluated.get("judge_agreement")
        result["judge"] = judge_trust.report_block(*judged, floor=floor)
        run_status.partial(result)  # a failure from here on reports what was evaluated
        figures = evaluation.flat_metrics(evaluated["rows"])
        tracking.log_final_metrics(parent_id, figures | judge_trust.parent_metrics(result["judge"]))

        run_info = run_info | {"mlflow_parent_run_url": url}
        gate = register_and_gate(stage, params, models, policies, evaluated, result, run_info)
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
