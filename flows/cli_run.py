"""Subcommands about whole runs: run, params, plan, sweep, compare."""

import argparse
import json
import sys
from pathlib import Path

from instructflow.flows.cli_models import at_least_one
from instructflow.tasks.paths import project_root


def _cmd_run(args: argparse.Namespace) -> int:
    # Servers were checked first (flows/cli.py main), before the imports below.
    from instructflow.flows import run_checks
    from instructflow.tasks import interrupts, late_cancel, temporary_server
    from instructflow.tasks.data_version import not_a_dvc_project

    server = temporary_server.EarlyStart()  # none yet
    try:
        with interrupts.interrupt_before_flow():
            # Settings first: a bad one is refused in a second, with no server started.
            params = _run_params(args)
            # The dataset --params names too: a run on one needs no DVC project around it.
            if not params.data and (problem := not_a_dvc_project(project_root())):
                # Before anything is written: no MLflow store or run in a folder that is no
                # project. Worded as preflight.refused words it (preflight imports MLflow).
                print(f"instructflow: refused before training: {problem}", file=sys.stderr)
                return 2
            # A dataset from a local model folder too: a bad row is refused in seconds, with no
            # server started and no flow imported (MLflow's, Prefect's: ~10 s before it).
            if params.data and (refusal := run_checks.checked_data(params)):
                return refusal
            server = temporary_server.start_early()  # starts beside the imports and checks below
            params = run_checks.checked_params(params)
            if isinstance(params, int):  # refused
                server.discard()
                return params
            from instructflow.flows.pipeline import rlhf_pipeline
            from instructflow.tasks import flow_start_watch, heap
            from instructflow.tasks.env import no_flow_heartbeats

            heap.imports_done()
            server.ready()
    except BaseException as error:  # a signal or a bad setting: its line alone, no server's
        server.discard()
        if isinstance(error, KeyboardInterrupt):
            raise interrupts.InterruptedBeforeFlow() from error  # worded by explained_errors
        raise
    with interrupts.stop_on_signals(), no_flow_heartbeats(), flow_start_watch.said_if_slow():
        state = rlhf_pipeline(params, return_state=True)
    if report := late_cancel.completed_report(state):
        late_cancel.mark_completed(state)
        print(f"instructflow: {late_cancel.MESSAGE}", file=sys.stderr)
    else:
        report = state.result()  # raises InputRefused if the flow refused, or the stage's error
    print(json.dumps(report["run"], indent=2))
    return 0


def _run_params(args: argparse.Namespace):
    """The run's parameters from --params and the options, validated (a ParamsError names each
    bad one); light: flows/params.py imports no stage library."""
    from instructflow.flows.params_io import build_params, read_params_file

    fields = read_params_file(args.params) if args.params else {}
    for field in (
        "profile",
        "seed",
        "base_model",
        "base_model_revision",
        "data",
        "threads",
        "processes",
    ):
        if getattr(args, field) is not None:
            fields[field] = getattr(args, field)
    if args.allow_data_mismatch:
        fields["allow_data_mismatch"] = True
    return build_params(fields)


def _cmd_params(args: argparse.Namespace) -> int:
    from instructflow.flows.params_io import example, schema

    print(json.dumps(schema() if args.schema else example(), indent=2))
    return 0


def _memory(text: str) -> int:
    """--memory in bytes; a size it cannot read is a usage error (it was a traceback)."""
    from instructflow.flows.plan import parse_size

    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _cmd_plan(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from instructflow.flows.params_io import build_params, read_params_file

    overrides = read_params_file(args.params) if args.params else {}
    for field in ("profile", "base_model", "base_model_revision", "processes"):
        if getattr(args, field) is not None:
            overrides[field] = getattr(args, field)
    params = build_params(overrides)  # a bad setting: refused before the plan imports transformers
    from instructflow.flows.plan import data_lengths, make_plan, render, runtime_bytes
    from instructflow.tasks.launch import warn_oversubscribed
    from instructflow.tasks.provenance import available_cores

    warn_oversubscribed(params.processes, params.threads or available_cores())  # as `run` says
    seq_len, prompt_len = args.seq_len, args.prompt_len
    if args.data:  # the data's longest rows, unless given
        longest_seq, longest_prompt = data_lengths(params, Path(args.data))
        seq_len, prompt_len = seq_len or longest_seq, prompt_len or longest_prompt
    plan = make_plan(params, seq_len, prompt_len)
    runtime = runtime_bytes() if args.runtime else None
    memory = args.memory
    if args.json:
        stages = [asdict(row) | {"peak": row.peak + (runtime or 0)} for row in plan["stages"]]
        print(json.dumps(plan | {"stages": stages, "runtime": runtime}, indent=2))
    else:
        print(render(plan, memory, runtime))
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from instructflow.flows.params_io import build_params, read_params_file

    # The same file as `run --params` (either shape, `_` comments): one-line errors, no traceback.
    overrides = read_params_file(args.params) if args.params else {}
    for field in ("profile", "threads"):
        if getattr(args, field) is not None:
            overrides[field] = getattr(args, field)
    params = build_params(overrides)  # a bad setting: refused before the sweep imports MLflow
    from instructflow.flows.sweep import WORLD_ONLY, run_sweep

    if params.data:  # before any seed runs (each ran to its end, then the sweep failed)
        print(f"instructflow: {WORLD_ONLY}", file=sys.stderr)
        return 2
    from instructflow.tasks import heap, temporary_server
    from instructflow.tasks.env import no_flow_heartbeats
    from instructflow.tasks.interrupts import stop_on_signals

    heap.imports_done()
    temporary_server.prepare()
    # Handlers of its own, as `run` has: a process started in the background inherits
    # SIGINT ignored, and a sweep stopped by SIGTERM would orphan its seeds' processes.
    # The seeds train in those processes, so this one has no step to finish: no grace (it
    # goes straight to stopping its seeds: flows/sweep_stop.py).
    with stop_on_signals(grace=0), no_flow_heartbeats():
        result = run_sweep(params, args.seeds, args.workers)
    print(json.dumps(result["sweep"], indent=2))
    return 0


def _read_report(file: str) -> dict | None:
    """A report.json's contents; None once it said in one line why it cannot be read."""
    path = Path(file)
    if path.is_dir():  # reports/<run> or reports/latest, as `eval export` takes a run
        path = path / "report.json"
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        problem = "no such file"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        problem = f"not a readable report.json: {e}"
    else:
        if not isinstance(report, dict) or "policies" not in report:
            problem = "not a report.json (it has no 'policies')"
        elif not report["policies"] and report.get("status") in ("failed", "interrupted"):
            # Compared, it gave an empty table under a judge named from absent blocks.
            stage, error = report.get("stopped_at_stage"), report.get("error")
            problem = (
                f"the run {report['status']} at stage {stage!r}"
                + (f" ({error})" if error else "")
                + ": its report has no figures to compare"
            )
        else:
            return report
    print(f"instructflow compare: {file}: {problem}", file=sys.stderr)
    return None


def _cmd_compare(args: argparse.Namespace) -> int:
    from instructflow.tasks.report_compare import report_comparison

    a, b = (_read_report(f) for f in (args.a, args.b))
    if a is None or b is None:
        return 2
    print(report_comparison(a, b))
    if not args.exact:
        return 0
    from instructflow.tasks.report_figures import (
        FIGURE_BLOCKS,
        figure_differences,
        measurement_differences,
    )

    differences = figure_differences(a, b)
    print(f"\n{len(differences)} figures differ ({', '.join(FIGURE_BLOCKS)}, compared exactly)")
    for line in differences:
        print(f"  {line}")
    # Time, throughput and memory are readings of the machine: shown, never a difference.
    measured = measurement_differences(a, b)
    if measured:
        print(f"{len(measured)} machine measurements differ (not compared):")
        for line in measured:
            print(f"  {line}")
    return 1 if differences else 0


def add_commands(sub) -> None:
    """Register these subcommands on the `instructflow` parser."""
    run = sub.add_parser(
        "run",
        help="Run the rlhf_pipeline flow.",
        description="Run the rlhf_pipeline flow once, here.",
    )
    run.add_argument(
        "--profile",
        choices=["smoke", "tiny", "small"],
        help="world and training size (default tiny)",
    )
    run.add_argument("--seed", type=int, help="training and sampling seed (default 0)")
    run.add_argument(
        "--base-model",
        dest="base_model",
        help="Hugging Face causal LM to start from: a local directory or a Hub id (org/name)",
    )
    run.add_argument(
        "--revision",
        dest="base_model_revision",
        help="Hub revision (branch, tag or commit) of a --base-model Hub id",
    )
    run.add_argument(
        "--data",
        help="your dataset directory (prompts, demonstrations, preferences; .jsonl or .parquet)",
    )
    run.add_argument(
        "--threads",
        type=at_least_one,
        help="torch CPU threads (default: every core this process may use)",
    )
    run.add_argument(
        "--processes",
        type=at_least_one,
        help="processes per training stage, under `accelerate launch` (default 1: in-process)",
    )
    run.add_argument(
        "--allow-data-mismatch",
        action="store_true",
        help="run even if data/ differs from data.dvc, or a --data directory added with "
        "`instructflow data add DIR` differs from its DIR.dvc (the run is tagged data_mismatch)",
    )
    run.add_argument(
        "--params",
        help='JSON file of run settings, {"params": {...}} as the Prefect form sends or the bare fields, '
        'or that JSON itself (\'{"ppo": {"lr": 3e-5}}\'); see `instructflow params --example` '
        "(command-line flags override it)",
    )
    # import_heavy: the handler imports everything, then calls heap.imports_done() (cli.main)
    run.set_defaults(func=_cmd_run, import_heavy=True)

    params = sub.add_parser(
        "params",
        help="Print the run settings' JSON schema or a commented example.",
        description="The settings `run --params FILE` reads, the same shape as the Prefect manual-run form: "
        '{"params": {...}} (bare fields are accepted too; keys starting with _ are comments). '
        "`instructflow params --example > p.json` writes every field at its default.",
    )
    shown = params.add_mutually_exclusive_group(required=True)
    shown.add_argument("--schema", action="store_true", help="the JSON schema of PipelineParams")
    shown.add_argument(
        "--example", action="store_true", help="every field at its default, each with a comment"
    )
    params.set_defaults(func=_cmd_params)

    plan = sub.add_parser(
        "plan",
        help="Memory each training stage needs, with and without LoRA.",
        description="Estimate per stage (SFT, RM, PPO) weights, gradients, optimizer state, "
        "activations per batch and PPO's rollout memory, with and without LoRA, and whether "
        "it fits --memory. See models/memory_plan.py for what is counted.",
    )
    plan.add_argument("--base-model", dest="base_model", help="directory or Hub id")
    plan.add_argument("--revision", dest="base_model_revision", help="Hub revision")
    plan.add_argument("--params", help="JSON file with PipelineParams fields, or that JSON itself")
    plan.add_argument("--profile", choices=["smoke", "tiny", "small"])
    plan.add_argument("--memory", type=_memory, help="memory to fit, e.g. 24GiB")
    plan.add_argument(
        "--data",
        help="your dataset folder (as `run --data`): sequence and prompt lengths from its "
        "longest rows in the base model's tokens, instead of the model's whole context",
    )
    plan.add_argument(
        "--processes", type=int, help="processes per training stage (as `run --processes`)"
    )
    plan.add_argument(
        "--seq-len", type=at_least_one, help="tokens per training sequence (default: context)"
    )
    plan.add_argument(
        "--prompt-len", type=at_least_one, help="PPO prompt tokens (default: seq-len - response)"
    )
    plan.add_argument(
        "--runtime", action="store_true", help="add this machine's measured runtime RSS to the peak"
    )
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    plan.set_defaults(func=_cmd_plan)

    sweep = sub.add_parser(
        "sweep",
        help="Run the pipeline once per seed and aggregate.",
        description="A seed_sweep flow: one rlhf_pipeline sub-flow run per seed (cores // threads at once), each with its own MLflow run under the sweep's; the sweep's run gets mean, sd, min, max and a seeds-then-prompts 95% interval per policy and metric (reports/sweeps/<run id>/aggregate.json). Never moves champion.",
    )
    sweep.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    sweep.add_argument("--profile", choices=["smoke", "tiny", "small"], help="default tiny")
    sweep.add_argument(
        "--threads", type=at_least_one, help="torch threads per seed (default: all cores)"
    )
    sweep.add_argument(
        "--workers", type=at_least_one, help="seeds at once (default: cores // threads)"
    )
    sweep.add_argument(
        "--params",
        help="JSON file of run settings for every seed, as `run --params` reads it "
        "(see `instructflow params --example`)",
    )
    sweep.set_defaults(func=_cmd_sweep, import_heavy=True)

    compare = sub.add_parser(
        "compare",
        help="Compare two report.json files.",
        description="Where each report was made (machine, software, threads, seed, commit) and each policy's figures side by side; says when the comparison crosses machines.",
    )
    compare.add_argument("a", help="report.json A")
    compare.add_argument("b", help="report.json B")
    compare.add_argument(
        "--exact",
        action="store_true",
        help="also compare every figure bit for bit; exit status 1 if any differs "
        "(e.g. the same seed before and after a change that must not move them); "
        "time, throughput and memory readings are shown but not compared",
    )
    compare.set_defaults(func=_cmd_compare)
