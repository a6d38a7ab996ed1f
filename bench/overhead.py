"""What Prefect and MLflow cost: a smoke run through the stage functions against the same run orchestrated.

    .venv/bin/python bench/overhead.py [--threads 2] [--profile smoke] [--rounds 7]

After one untimed direct run and one untimed flow run (a process's first
run of each pays one-time costs), each round, in a fresh temporary project
root (its own data/, runs/ and MLflow SQLite store; one Prefect home for all
rounds), three timed runs on the same data, settings and seed, the direct
run first in even rounds and last in odd ones:

1. direct: every stage's plain function called in pipeline order (the
   input checks and DVC data gate the flow runs first, data validation,
   base model, SFT, comparisons, RM, held-out judge, PPO, PPO-ptx, FLAN,
   T0, evaluation with the judge, its files and the report's plots), no
   Prefect, no MLflow;
2. orchestrated: `rlhf_pipeline` (Prefect tasks, MLflow runs, artifacts,
   registry and promotion gate); Prefect's ephemeral server is started
   and the MLflow store's tables are created before the clock runs (a
   trivial flow; `tracking.setup()`), as the issue excludes server start and
   a user pays both once per project;
3. re-run: the same flow again, unchanged: every stage comes from the cache.

Like `instructflow run`, the bench freezes what it imported before the first
timed run (tasks/heap.py), so that neither side's full garbage collections
scan the million imported objects.

The direct path has no registry or gate (they are MLflow's), so both sides
are compared without it: the overhead is (orchestrated - registry stage -
direct) / (orchestrated - registry stage), with the registry stage's seconds
taken from the run's own `stage_seconds/registry` (`overhead_fraction_of_whole_run`
divides by the whole run instead, which a slow registry stage makes look smaller).
Each round also records the CPU seconds of each side's run, its own and the
Prefect server's (bench/cpu_seconds.py), which tell where the extra wall time goes.
Prints the median and range over rounds of both ratios, and a bootstrap CI of
the overhead's median (single rounds swing by several points: on the slow
2-core host of 2026-12-04, 15 rounds left that CI 10 to 13 points wide); writes
bench/results/overhead.json.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "overhead.json"


def prepare_root(root: Path) -> None:
    """A DVC project with the repository's data.dvc and the data it names (not timed)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "data.dvc", root / "data.dvc")
    from dvc.repo import Repo

    from instructflow.tasks import data

    Repo.init(str(root), no_scm=True).close()

    data.ensure_data(root)


def enter_root(root: Path) -> None:
    """A prepared project root (prepare_root) that this process's runs use from now on,
    with its own MLflow SQLite store."""
    os.environ.update(
        INSTRUCTFLOW_ROOT=str(root), MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}"
    )
    prepare_root(root)


def checked_inputs(root: Path, params) -> None:
    """What the flow's preflight does before any stage (`data_restore` in its stage seconds):
    data/ checked against data.dvc, then every input table, split and length checked. Neither
    is Prefect's or MLflow's work, so the direct run does it too (without the marker by which
    a later run skips the checks)."""
    from instructflow.tasks import data, preflight

    data.ensure_data(root, params.allow_data_mismatch)
    preflight.check_inputs(params, root / "data" / params.profile)


def direct(profile_dir: Path, params, out: Path) -> tuple[float, dict[str, float]]:
    """Every stage's plain function, in pipeline order: wall seconds, and seconds per stage."""
    from instructflow.tasks import (
        base_model,
        comparisons,
        evaluation,
        judge,
        ppo,
        reward_model,
        sft,
    )
    from instructflow.tasks.data import summarize
    from instructflow.world import layout

    def log(step: int, metrics: dict, *_progress) -> None:
        pass

    seconds: dict[str, float] = {}

    def timed(stage: str, fn, *args):
        started = time.perf_counter()
        result = fn(*args)
        seconds[stage] = round(time.perf_counter() - started, 2)
        return result

    seed = params.seed
    start = time.perf_counter()
    timed("data_restore", checked_inputs, profile_dir.parent.parent, params)
    timed("data", summarize, profile_dir, "direct")
    base_cfg = params.stage("base")
    timed(
        "base_model",
        base_model.build_base_model,
        profile_dir,
        None,
        base_cfg,
        seed,
        out / "base",
        log,
    )
    base = out / "base" / "model"
    sft_args = (profile_dir / layout.SFT_TRAIN, profile_dir / layout.SFT_VALID, "demonstrations")
    timed("sft", sft.finetune, base, *sft_args, params.stage("sft"), seed, out / "sft", log)
    sft_dir = out / "sft" / "model"
    comps = out / "comparisons"
    comps.mkdir(parents=True)
    timed(
        "comparisons",
        comparisons.collect,
        sft_dir,
        profile_dir,
        params.stage("comparisons"),
        seed,
        comps,
    )
    rm_args = (sft_dir, comps, profile_dir)
    (out / "rm").mkdir(parents=True)
    timed(
        "reward_model",
        reward_model.train_reward_model,
        *rm_args,
        params.stage("reward_model"),
        seed,
        out / "rm",
        log,
    )
    (out / "judge").mkdir(parents=True)
    judge_args = (sft_dir, profile_dir, comps, params.stage("judge"), seed, out / "judge", log)
    timed("judge", judge.train_judge_on_comparisons, *judge_args)
    rm_dir = out / "rm" / "model"
    for name, gamma in (("ppo", 0.0), ("ppo_ptx", params.ptx_gamma)):
        ppo_args = (
            name,
            sft_dir,
            rm_dir,
            profile_dir,
            params.stage("ppo"),
            gamma,
            seed,
            out / name,
            log,
        )
        timed(name, ppo.run_ppo, *ppo_args)
    for name, table in (("flan", layout.FLAN_MIXTURE), ("t0", layout.T0_MIXTURE)):
        mixture = (profile_dir / table, None, "mixture", params.stage("baselines"))
        timed(name, sft.finetune, base, *mixture, seed, out / name, log)
    cfg = params.stage("evaluation")
    prefix = evaluation.fewshot_prefix(profile_dir, cfg.fewshot_examples)
    policies = [
        evaluation.Policy("base", base),
        evaluation.Policy("base_fewshot", base, prefix),
        evaluation.Policy("flan", out / "flan" / "model"),
        evaluation.Policy("t0", out / "t0" / "model"),
        evaluation.Policy("sft", sft_dir),
        evaluation.Policy("ppo", out / "ppo" / "model"),
        evaluation.Policy("ppo_ptx", out / "ppo_ptx" / "model"),
    ]
    eval_args = (policies, sft_dir, rm_dir, profile_dir, cfg, seed, out / "judge")
    (out / "evaluation").mkdir()

    def evaluate_and_write() -> dict:  # what the evaluation task runs
        return evaluation.write_evaluation(
            out / "evaluation", *evaluation.evaluate(*eval_args), out / "judge"
        )

    timed("evaluation", evaluate_and_write)
    return time.perf_counter() - start, seconds


def orchestrated(params) -> tuple[float, dict]:
    from mlflow import MlflowClient

    from instructflow.flows.pipeline import rlhf_pipeline
    from instructflow.tasks.env import no_flow_heartbeats

    start = time.perf_counter()
    with no_flow_heartbeats():  # as `instructflow run` calls it
        result = rlhf_pipeline(params)
    seconds = time.perf_counter() - start
    metrics = MlflowClient().get_run(result["run"]["mlflow_run_id"]).data.metrics
    return seconds, metrics


def one_round(tmp: Path, params, index: int) -> dict:
    """A fresh project root: the direct run and the orchestrated run (then its unchanged
    re-run), the direct run first in even rounds and last in odd ones, so a machine that
    speeds up or slows down during a round does not always favour the same side."""
    from bench import cpu_seconds
    from instructflow.tasks import tracking

    project = tmp / f"project-{index}"
    enter_root(project)

    cpu: dict[str, dict[str, float]] = {}  # CPU seconds per process, of each side's timed run

    def run_direct() -> tuple[float, dict[str, float]]:
        before = cpu_seconds.reading()
        timed = direct_in(project, params, tmp / f"direct-{index}", f"round {index}: direct")
        cpu["direct"] = cpu_seconds.spent(before, cpu_seconds.reading())
        return timed

    def run_orchestrated() -> tuple[float, float, dict, float]:
        started = time.perf_counter()
        tracking.setup()  # creates the MLflow store's tables: once per project (excluded)
        store_s = time.perf_counter() - started
        before = cpu_seconds.reading()
        first_s, metrics = orchestrated(params)
        cpu["orchestrated"] = cpu_seconds.spent(before, cpu_seconds.reading())
        rerun_s, _ = orchestrated(params)
        print(
            f"[overhead] round {index}: orchestrated {first_s:.1f} s, re-run {rerun_s:.1f} s",
            flush=True,
        )
        return store_s, first_s, metrics, rerun_s

    if index % 2 == 0:
        direct_s, direct_stages = run_direct()
        store_s, first_s, metrics, rerun_s = run_orchestrated()
    else:
        store_s, first_s, metrics, rerun_s = run_orchestrated()
        direct_s, direct_stages = run_direct()
    registry_s = metrics.get("stage_seconds/registry", 0.0)
    return {
        "direct_seconds": round(direct_s, 2),
        "orchestrated_seconds": round(first_s, 2),
        "registry_stage_seconds": round(registry_s, 2),
        "mlflow_store_creation_seconds": round(store_s, 2),
        "rerun_seconds": round(rerun_s, 2),
        "compared_seconds": round(first_s - registry_s, 2),
        "overhead_fraction": round((first_s - registry_s - direct_s) / (first_s - registry_s), 4),
        "overhead_fraction_of_whole_run": round((first_s - registry_s - direct_s) / first_s, 4),
        "rerun_fraction": round(rerun_s / first_s, 4),
        "direct_stage_seconds": direct_stages,
        "cpu_seconds": cpu,
        "stage_seconds": {
            k.split("/", 1)[1]: round(v, 2)
            for k, v in metrics.items()
            if k.startswith("stage_seconds/")
        },
    }


def direct_in(project: Path, params, out: Path, label: str) -> tuple[float, dict[str, float]]:
    """`direct` on the data of a prepared project root, its seconds printed under `label`."""
    seconds, stages = direct(project / "data" / params.profile, params, out)
    print(f"[overhead] {label} {seconds:.1f} s", flush=True)
    return seconds, stages


def warm_up_direct(tmp: Path, params) -> None:
    """One untimed direct run: the first run in a process pays one-time costs (imports,
    first calls, cold files) that took round 0's direct run 4-10 s longer than the others."""
    project = tmp / "project-warm-up"
    enter_root(project)
    direct_in(project, params, tmp / "direct-warm-up", "warm-up (not counted): direct")


def warm_up_orchestrated(tmp: Path, params) -> None:
    """One untimed flow run, for the same reason as `warm_up_direct`: the first flow in a
    process pays one-time costs of its own (modules imported and code paths first taken
    by a flow run); without this run, round 0 (the first flow) had the largest overhead
    of its file in four of the seven files of 2026-12-04 and one of the three largest in
    all seven."""
    from instructflow.tasks import tracking

    project = tmp / "project-warm-up-flow"
    enter_root(project)
    tracking.setup()
    seconds, _ = orchestrated(params)
    print(f"[overhead] warm-up (not counted): orchestrated {seconds:.1f} s", flush=True)


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--threads", type=int, default=2)
    # 7: rounds swing by several points (a full garbage collection, the server's CPU)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="instructflow-overhead-"))
    # Before anything imports prefect: a Prefect home of its own, then what the CLI sets
    # (each round then gets a project root of its own).
    os.environ.update(
        INSTRUCTFLOW_ROOT=str(tmp / "project-0"), PREFECT_HOME=str(tmp / "prefect-home")
    )
    os.environ.pop("PREFECT_API_URL", None)
    sys.path.insert(0, str(ROOT))
    from instructflow.tasks.env import apply_defaults

    apply_defaults()
    import torch

    from bench import cpu_seconds, readme
    from bench.mfu import matmul_peak

    # The host's speed, so that files measured on hosts of different speeds can be told
    # apart (the same 2-core machine class has run the same stages 2-4x apart).
    torch.set_num_threads(1)
    host_gflops = matmul_peak(1) / 1e9
    torch.set_num_threads(args.threads)
    from prefect import flow

    from instructflow.flows.params import PipelineParams
    from instructflow.tasks import temporary_server

    temporary_server.prepare()  # its server as `instructflow run` starts it (a kernel port)

    @flow
    def warm_up() -> int:
        return 1

    try:
        params = PipelineParams(profile=args.profile)
        started = time.perf_counter()
        warm_up()  # starts Prefect's ephemeral server (excluded)
        server_s = time.perf_counter() - started
        from instructflow.flows.pipeline import rlhf_pipeline  # noqa: F401  (imported, then frozen)
        from instructflow.tasks import heap

        heap.imports_done()  # as `instructflow run` does before its flow (both sides run after it)
        warm_up_direct(tmp, params)
        warm_up_orchestrated(tmp, params)
        rounds = [one_round(tmp, params, index) for index in range(args.rounds)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    result = {
        "machine": f"{readme.cpu_model()}, {os.cpu_count()} cores, a 1024^3 matmul at"
        f" {host_gflops:.0f} GFLOP/s on one"
        f" thread; 1-min load average {os.getloadavg()[0]:.1f} at the end",
        "matmul_gflops_one_thread": round(host_gflops, 1),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "command": " ".join(["overhead.py", *sys.argv[1:]]),
        "profile": args.profile,
        "threads": args.threads,
        "prefect_server_start_seconds": round(server_s, 2),
        **{
            name: spread([r[name] for r in rounds])
            for name in (
                "overhead_fraction",
                "overhead_fraction_of_whole_run",
                "rerun_fraction",
                "direct_seconds",
                "orchestrated_seconds",
                "compared_seconds",
                "rerun_seconds",
            )
        },
        "cpu_seconds": cpu_seconds.summary([r["cpu_seconds"] for r in rounds], spread),
        "rounds": rounds,
    }
    overhead, rerun = result["overhead_fraction"], result["rerun_fraction"]
    from bench.readme import median_ci95

    low, high = median_ci95([r["overhead_fraction"] for r in rounds])
    print(
        f"overhead (orchestration + tracking, registry stage excluded on both sides), "
        f"median of {args.rounds}: "
        f"{100 * overhead['median']:.1f}% [{100 * overhead['min']:.1f}, {100 * overhead['max']:.1f}]"
        f" (95% CI of the median {100 * low:.1f} to {100 * high:.1f}%); "
        f"unchanged re-run: {100 * rerun['median']:.1f}% of the first run "
        f"[{100 * rerun['min']:.1f}, {100 * rerun['max']:.1f}]"
    )
    print(cpu_seconds.line(result["cpu_seconds"]))
    readme.save(result, args.out, DEFAULT_OUT)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
