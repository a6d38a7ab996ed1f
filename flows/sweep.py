"""The `seed_sweep` Prefect flow: the pipeline once per training seed, and what its figures are worth.

Each seed is a sub-flow run of `rlhf_pipeline` inside a task, submitted to
Prefect's ProcessPoolTaskRunner: a process per seed, so each has its own
torch threads and random state, and as many run at once as the cores allow
(cores // threads). Each child has its own MLflow run, nested under the
sweep's run, which gets the aggregate (tasks/sweep_stats.py): per policy and
metric the mean, sd, min and max over seeds and a 95% interval over seeds and
prompts, the once-per-run figures about the world (tasks/sweep_world.py), and
the head-to-head win rate between seeds of the candidate (the noise a
promotion gate must clear).

A seed that a busy Prefect server stopped (429 or 502-504 after its client's own
retries, or no answer in time) runs again, up to twice (BUSY_SERVER_WAITS); its
finished stages come from the cache. Any other failure ends the sweep at once.

A sweep never moves `champion`: its children register under models of their
own (`<name>-sweep`) with the gate's auto_promote off.
"""

import itertools
import json
import multiprocessing
import os
import pickle
import time
from datetime import UTC, datetime
from pathlib import Path

import mlflow
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from instructflow.flows import explained_errors
from instructflow.flows.params import PipelineParams
from instructflow.flows.params_io import ParamsError
from instructflow.flows.stages import run_stage
from instructflow.flows.sweep_stop import close_seed_runs, seed_pool, stop_seeds
from instructflow.tasks import (
    concurrency,
    data,
    env,
    interrupts,
    provenance,
    sweep_report,
    sweep_stats,
    sweep_world,
    tracking,
)
from instructflow.tasks.evaluation import Policy, head_to_head
from instructflow.tasks.paths import project_root, reports_dir
from instructflow.tasks.stage import output_dir
from instructflow.tasks.tables import read_jsonl

# Where each per-prompt metric's values sit in the evaluation's responses/<policy>.jsonl.
SAMPLE_FIELDS = {"gold_score": "gold", "win_rate_vs_sft": "labeler_verdict"}


def child_params(params: PipelineParams, seed: int) -> PipelineParams:
    """One seed's pipeline parameters: the sweep's, with its seed, a gate that never promotes,
    and registered models of their own (`<name>-sweep`), so even `challenger` stays put."""
    gate = params.gate.model_copy(update={"auto_promote": False})
    policy, reward = params.registry.names(params.profile)
    registry = params.registry.model_copy(
        update={"model_name": f"{policy}-sweep", "reward_model_name": f"{reward}-sweep"}
    )
    return params.model_copy(update={"seed": seed, "gate": gate, "registry": registry})


def workers_for(params: PipelineParams) -> int:
    """Seeds that can run at once without sharing cores: cores // threads (at least 1)."""
    threads = params.threads or provenance.available_cores()
    return max(1, provenance.available_cores() // threads)


def per_prompt_from(report: dict) -> dict[str, dict[str, list[float]]]:
    """Each policy's per-prompt gold score and win rate, from the run's evaluation outputs."""
    responses = output_dir(report["run"]["stage_keys"]["evaluation"]) / "responses"
    out = {}
    for policy in report["policies"]:
        rows = read_jsonl(responses / f"{policy}.jsonl")
        out[policy] = {m: sweep_stats.per_prompt_values(rows, f) for m, f in SAMPLE_FIELDS.items()}
    return out


class ServerBusy(RuntimeError):
    """Prefect's server could not take a seed's request: it answered 429, 502, 503 or 504
    after its client's own retries, or did not answer in time."""


def server_busy(error: BaseException) -> bool:
    """Whether `error` is a Prefect server too busy to answer, not one that is gone or refused."""
    import httpx

    if isinstance(error, httpx.HTTPStatusError):
        return error.response.status_code in (429, 502, 503, 504)
    return isinstance(error, httpx.TimeoutException)


def retry_when_server_busy(task, task_run, state) -> bool:
    """Prefect's retry condition for a seed: run it again only when the server was busy."""
    return isinstance(state.result(raise_on_failure=False), ServerBusy)


# The waits before a seed runs again after a busy server (its finished stages then come
# from the cache). On a loaded 2-core machine the sweep's SQLite-backed Prefect server
# stayed locked ("database is locked", 503) for longer than its client's own retries,
# about a minute, and the whole sweep failed on one seed.
BUSY_SERVER_WAITS = [30, 90]


@task(
    name="seed-run",
    task_run_name="seed-{seed}",
    retries=len(BUSY_SERVER_WAITS),
    retry_delay_seconds=BUSY_SERVER_WAITS,
    retry_condition_fn=retry_when_server_busy,
)
def seed_run(params: PipelineParams, seed: int, sweep_run_id: str) -> dict:
    """One seed: the whole pipeline as a sub-flow run, then its per-prompt values."""
    from instructflow.flows.pipeline import rlhf_pipeline

    try:
        # Our handlers, as `instructflow run` has: the default one raised KeyboardInterrupt
        # wherever the seed was, and once that was a finalizer (asyncio's __del__), whose
        # errors Python ignores: the seed trained on. Ours ask its loop to stop after the step.
        with interrupts.stop_on_signals():
            report = rlhf_pipeline(child_params(params, seed), sweep_run_id=sweep_run_id)
    except KeyboardInterrupt as stop:
        # The seed's own stop (Ctrl-C reaches every process of the sweep). Raised on as it is,
        # Prefect's process pool never completed the seed's future in the sweep's process,
        # whose pool manager thread died of it: the sweep waited on it for good.
        raise SeedInterrupted(f"seed {seed}: {stop}") from None
    except Exception as error:
        raise returnable(error) from None
    return {"report": report, "per_prompt": per_prompt_from(report)}


class SeedInterrupted(RuntimeError):
    """A seed's run stopped by a signal (a plain exception, so that it comes back)."""


def returnable(error: Exception) -> Exception:
    """`error`, or one that says it and can come back from the seed's process (pickled
    there, unpickled in the sweep's: httpx's HTTPStatusError, raised on a busy server's
    503, came back as "HTTPStatusError.__init__() missing 2 required arguments").
    A busy server's error becomes ServerBusy, which the seed's retries look for."""
    said = f"{type(error).__name__}: {error}"
    if server_busy(error):
        return ServerBusy(said)
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001  (whatever stops the round trip)
        return RuntimeError(said)
    return error


class SeedFailed(RuntimeError):
    """A seed's run failed; the message names the seed and why, as its task run recorded."""


def seed_result(seed: int, future) -> dict:
    """The seed's result, or SeedFailed naming the seed and the task run's own message.

    A seed runs in a process of its own; what it raised comes back pickled, and some
    errors cannot be unpickled (httpx's HTTPStatusError, raised when Prefect's server
    answers 503 on a busy machine, came back as "TypeError: HTTPStatusError.__init__()
    missing 2 required keyword-only arguments"). The task run's final state says it.
    """
    interrupts.wait_awake(future.wrapped_future)
    try:
        return future.result()
    except Exception as error:
        if interrupts.received:  # the sweep's own Ctrl-C or SIGTERM stopped its seeds too
            raise interrupts.RunInterrupted(interrupts.received[0]) from error
        try:
            why = future.state.message or f"{type(error).__name__}: {error}"
        except Exception:  # the state could not be read either (the server gone)
            why = f"{type(error).__name__}: {error}"
        raise SeedFailed(f"seed {seed} failed: {why}") from error


@task(name="seed-pairs")
def seed_pairs(params: PipelineParams, reports: dict[int, dict]) -> dict:
    """The candidate of each seed against the candidate of every other seed, head to head."""
    profile_dir = project_root() / "data" / params.profile
    cfg = params.stage("evaluation").model_copy(
        update={"max_prompts": params.stage("gate").max_prompts}
    )

    def model_dir(seed: int, policy: str) -> Path:
        return output_dir(reports[seed]["run"]["stage_keys"][policy]) / "model"

    pairs = []
    for first, second in itertools.combinations(sorted(reports), 2):
        started = time.monotonic()
        match = head_to_head(
            Policy("challenger", model_dir(first, params.candidate)),
            Policy("incumbent", model_dir(second, params.candidate)),
            profile_dir,
            cfg,
            params.seed,
        )
        pairs.append(
            {
                "seeds": [first, second],
                "win_rate": match["win_rate"]["mean"],
                "ci95": match["win_rate"]["ci95"],
            }
        )
        print(
            f"seed {first} vs {second}: {pairs[-1]['win_rate']:.3f} ({time.monotonic() - started:.0f} s)"
        )
    return sweep_stats.gate_noise(pairs) | {"policy": params.candidate}


WORLD_ONLY = (
    "a seed sweep runs on the embedded world only (its spread over seeds is of gold scores, "
    "and its seeds play each other before the world's held-out labelers); on your dataset, "
    "run `instructflow run --data DIR --seed N` for each seed and `instructflow compare` "
    "their reports"
)


@flow(name="seed_sweep", log_prints=True, task_runner=seed_pool(1))
def seed_sweep(
    params: PipelineParams = PipelineParams(),
    seeds: list[int] = [0, 1, 2],  # noqa: B006
    workers: int = 1,
) -> dict:
    """Run the pipeline once per seed (sub-flow runs) and aggregate the figures over seeds.

    `workers`: the seeds the task runner runs at once (run_sweep sets both).
    """
    logger = get_run_logger()
    env.apply_defaults()  # as rlhf_pipeline does; the child processes inherit them
    explained_errors.keep_tracebacks_for_bugs()  # for a run a worker starts
    if len(set(seeds)) < 2:
        raise ValueError(f"a seed sweep needs at least two different seeds, got {seeds}")
    if params.data:
        raise ParamsError(WORLD_ONLY)
    started = time.monotonic()
    started_utc, load_at_start = _utc_now(), os.getloadavg()
    # The head-to-head between seeds runs here: the same thread count as the children
    # (on a busy machine two spinning OpenMP threads made it 15x slower than one).
    provenance.pin_threads(params.threads)
    tracking.setup()
    # The data gate once, here: children started together must not each regenerate data/.
    version = data.restore_data_task(str(project_root()), params.allow_data_mismatch)
    logger.info(data.describe(version))
    tags = {"kind": "seed_sweep", "profile": params.profile, "seeds": " ".join(map(str, seeds))}
    with (
        mlflow.start_run(run_name=f"sweep-{params.profile}", tags=tags) as run,
        tracking.closing_run(),
    ):
        sweep_id = run.info.run_id
        # The data stage has no seed in its key: validated once here, children find it cached
        # (two children validating at once raced on MLflow's dataset table).
        run_stage(
            data.validate_data_task,
            "data",
            config={"profile": params.profile},
            inputs={"data_md5": version["md5"]},
            parent_run_id=sweep_id,
            profile_dir=str(project_root() / "data" / params.profile),
            md5=version["md5"],
        )
        # The children report to this run's Prefect API. Without a configured server
        # (ephemeral mode) each worker process would start a server of its own.
        with get_client(sync_client=True) as client:
            api_url = str(client.api_url)
        # As many training slots as seeds at once: on the one default slot the children
        # queued and trained one after another, whatever the workers (seen on a tiny sweep).
        with (
            temporary_settings(updates={PREFECT_API_URL: api_url}),
            concurrency.training_slots_at_least(min(workers, len(seeds))),
        ):
            before = set(multiprocessing.active_children())
            futures = [seed_run.submit(params, seed, sweep_id) for seed in seeds]
            # Ours over Prefect's SIGTERM handler (its flow engine's, put back by each task
            # run here): with Prefect's, a `kill PID` left the sweep unaware of the signal,
            # so it gave its seeds, who heard nothing, 10 s to stop on their own.
            interrupts.reclaim()
            try:
                results = {s: seed_result(s, f) for s, f in zip(seeds, futures, strict=True)}
            except BaseException:
                stop_seeds(futures, set(multiprocessing.active_children()) - before)
                close_seed_runs(sweep_id, logger)
                raise
        reports = {seed: r["report"] for seed, r in results.items()}
        result = sweep_stats.aggregate(reports, {s: r["per_prompt"] for s, r in results.items()})
        result["world"] = sweep_world.world_figures(reports)
        result["gate_noise"] = seed_pairs(params, reports)
        result["provenance"] = sweep_report.common_provenance(reports) | {
            "profile": params.profile,
            "workers": workers,
            "wall_s": round(time.monotonic() - started, 1),
            # How busy the machine was: the wall time means little without it.
            "started_utc": started_utc,
            "ended_utc": _utc_now(),
            "load_average": {"start": list(load_at_start), "end": list(os.getloadavg())},
        }
        result["sweep"] = {
            "mlflow_run_id": sweep_id,
            "child_runs": {str(s): r["run"]["mlflow_run_id"] for s, r in reports.items()},
        }
        mlflow.log_params({"profile": params.profile, "seeds": tags["seeds"]})
        mlflow.set_tags(provenance.mlflow_tags(result["provenance"]))
        tracking.log_metrics(sweep_report.flat_metrics(result))
        markdown = sweep_report.to_markdown(result)
        folder = reports_dir() / "sweeps" / sweep_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "aggregate.json").write_text(json.dumps(result, indent=2) + "\n")
        (folder / "aggregate.md").write_text(markdown)
        mlflow.log_artifacts(str(folder), artifact_path="sweep")
        create_markdown_artifact(
            markdown=markdown, key="seed-sweep", description=f"sweep {sweep_id}"
        )
    logger.info("sweep aggregate: %s", folder / "aggregate.json")
    return result


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_sweep(params: PipelineParams, seeds: list[int], workers: int | None = None) -> dict:
    """The sweep with as many processes as `workers` (default: cores // threads)."""
    workers = workers or workers_for(params)
    runner = seed_pool(workers)
    before = set(multiprocessing.active_children())
    try:
        return seed_sweep.with_options(task_runner=runner)(params, seeds, workers)
    finally:
        # A sweep stopped by a signal or an error leaves its pool's workers waiting for
        # work that never comes, and the interpreter's exit joins them: a sweep stopped
        # with Ctrl-C said so, then hung for minutes. A seed still running has lost its
        # sweep (and, with the temporary server, its Prefect API) anyway.
        for child in set(multiprocessing.active_children()) - before:
            child.terminate()
