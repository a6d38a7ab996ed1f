"""The `instructflow` command line. Every subcommand has --help.

instructflow run --profile tiny          run the whole pipeline
instructflow params --example            every run setting, commented (--schema: JSON schema)
instructflow data generate               regenerate data/ and record it in data.dvc
instructflow data verify                 check data/ against data.dvc
instructflow data add DIR                validate your dataset directory and `dvc add` it
instructflow data validate FILE --kind comparisons
                                         validate one JSONL table (e.g. human comparisons)
instructflow evaluate champion challenger
                                         evaluate registered policies against SFT and each other
instructflow promote --version 3 --reason "..."
                                         move `champion` by hand (an override of the gate)
instructflow best-of-n                   how far the newest RM can lift SFT (no RL): best of n by RM vs by gold
instructflow sweep --seeds 0 1 2         the pipeline once per seed; figures with their spread over seeds
instructflow compare A.json B.json       two reports side by side, saying if they come from different machines
"""

import argparse
import json
import sys
from pathlib import Path

import tasks  # noqa: F401  (environment defaults before prefect is imported)
from tasks.paths import project_root
from tasks.schemas import KINDS


def _cmd_run(args: argparse.Namespace) -> int:
    from flows.params_io import build_params, read_params_file
    from tasks import outages, preflight
    from tasks.interrupts import stop_on_signals

    # Before the heavy imports: an unreachable server is reported within seconds.
    outages.bound_mlflow_retries()
    outages.preflight()

    fields = read_params_file(args.params) if args.params else {}
    for field in ("profile", "seed", "base_model", "base_model_revision", "data", "threads"):
        if getattr(args, field) is not None:
            fields[field] = getattr(args, field)
    if args.allow_data_mismatch:
        fields["allow_data_mismatch"] = True
    params = build_params(fields)
    from tasks.provenance import pin_threads

    pin_threads(params.threads)  # before any torch work (inter-op threads can be set only once)
    local = params
    if params.base_model:  # a missing model fails here, before Prefect or any stage starts
        from models.hub import resolve_pretrained

        model_dir = resolve_pretrained(params.base_model, params.base_model_revision)
        local = params.model_copy(update={"base_model": str(model_dir)})
    if params.data:
        from flows.own_data import NEEDS_BASE
        from flows.own_data import preflight as own_data_preflight

        if not params.base_model:
            print(f"instructflow: {NEEDS_BASE}", file=sys.stderr)
            return 2

        own_data_preflight(local)  # a refused dataset stops here with its problems, before any flow
    else:
        # Checked here, before Prefect starts (which takes a while): a refusal comes in seconds.
        _, refusal = preflight.refusal_of(local, project_root())
        if refusal:
            # printed before MLflow's (slow) start-up
            print(f"instructflow: {refusal}", file=sys.stderr, flush=True)
            run_id = preflight.record_refusal(params, refusal)
            print(f"instructflow: MLflow run {run_id} marked FAILED", file=sys.stderr)
            return 2

    from flows.pipeline import rlhf_pipeline

    with stop_on_signals():
        state = rlhf_pipeline(params, return_state=True)
    report = state.result()  # raises InputRefused if the flow refused, or the stage's error
    print(json.dumps(report["run"], indent=2))
    return 0


def _cmd_params(args: argparse.Namespace) -> int:
    from flows.params_io import example, schema

    print(json.dumps(schema() if args.schema else example(), indent=2))
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from flows.params_io import build_params, read_params_file
    from flows.plan import make_plan, parse_size, render, runtime_bytes

    overrides = read_params_file(args.params) if args.params else {}
    for field in ("profile", "base_model", "base_model_revision"):
        if getattr(args, field) is not None:
            overrides[field] = getattr(args, field)
    plan = make_plan(build_params(overrides), args.seq_len, args.prompt_len)
    runtime = runtime_bytes() if args.runtime else None
    memory = parse_size(args.memory) if args.memory else None
    if args.json:
        stages = [asdict(row) | {"peak": row.peak + (runtime or 0)} for row in plan["stages"]]
        print(json.dumps(plan | {"stages": stages, "runtime": runtime}, indent=2))
    else:
        print(render(plan, memory, runtime))
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from flows.params import PipelineParams
    from flows.sweep import run_sweep

    overrides = json.loads(Path(args.params).read_text()) if args.params else {}
    for field in ("profile", "threads"):
        if getattr(args, field) is not None:
            overrides[field] = getattr(args, field)
    result = run_sweep(PipelineParams(**overrides), args.seeds, args.workers)
    print(json.dumps(result["sweep"], indent=2))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from tasks.provenance import report_comparison

    a, b = (json.loads(Path(f).read_text()) for f in (args.a, args.b))
    print(report_comparison(a, b))
    return 0


def _cmd_data_generate(args: argparse.Namespace) -> int:
    from tasks import data, data_version

    root = project_root()
    data.generate(root, seed=args.seed)
    print(f"wrote {root / 'data'} (seed {args.seed})")
    if args.no_dvc:
        return 0
    md5 = data_version.add_and_push(root)
    print(f"data.dvc now records md5 {md5}; commit data.dvc to make it the project's data version")
    return 0


def _cmd_data_add(args: argparse.Namespace) -> int:
    from tasks.dataset_dvc import OutsideProject, add_dataset

    try:
        added = add_dataset(project_root(), Path(args.dir))
    except OutsideProject as error:
        print(f"instructflow: {error}", file=sys.stderr)
        return 2
    for name, md5 in added["md5s"].items():
        print(f"{name}: md5 {md5}")
    where = "DVC cache and remote" if added["pushed"] else "DVC cache"
    print(f"stored in the {where}; commit {added['dvc_file']} to version the dataset")
    return 0


def _cmd_data_verify(_args: argparse.Namespace) -> int:
    from tasks import data_version

    md5 = data_version.verify(project_root())
    print(f"data/ matches data.dvc (md5 {md5})")
    return 0


def _cmd_data_validate(args: argparse.Namespace) -> int:
    from tasks.input_checks import table_problems
    from tasks.tables import TableError

    frame, problems = table_problems(Path(args.file), args.kind)  # an empty file is refused too
    if frame is None:
        raise TableError(problems)
    print(f"{args.file}: {len(frame)} valid rows of kind {args.kind}")
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    from tasks import tracking
    from tasks.registry import promote_manually

    tracking.setup()
    promote_manually(args.version, args.reason, args.model)
    print(f"{args.model} v{args.version} is now champion (manual: {args.reason})")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from flows.evaluate import EvaluateParams, evaluate_registered

    result = evaluate_registered(
        EvaluateParams(
            models=args.models,
            model_name=args.model,
            profile=args.profile,
            seed=args.seed,
            evaluation={"max_prompts": args.max_prompts},
        )
    )
    for name, row in result["policies"].items():
        print(
            f"{name}: gold {row['gold_score']['mean']:.3f}  win vs SFT {row['win_rate_vs_sft']['mean']:.3f}"
        )
    return 0


def _newest_model(stage: str) -> Path:
    """The model folder of a stage's most recent run under runs/."""
    found = sorted(
        (project_root() / "runs" / stage).glob("*/model"), key=lambda p: p.stat().st_mtime
    )
    if not found:
        raise SystemExit(
            f"instructflow: no {stage} model under runs/{stage}/; run `make demo` first"
        )
    return found[-1]


def _cmd_best_of_n(args: argparse.Namespace) -> int:
    from tasks.best_of_n import best_of_n_table, sample_candidates

    sft = Path(args.sft) if args.sft else _newest_model("sft")
    rm = Path(args.rm) if args.rm else _newest_model("reward_model")
    profile_dir = project_root() / "data" / args.profile
    print(
        f"SFT {sft}\nRM  {rm}\nsampling {args.n} + {args.references} responses for {args.prompts} test prompts"
    )
    cands = sample_candidates(
        sft, rm, profile_dir, args.n, args.references, args.prompts, args.seed
    )
    ns = sorted({n for n in (1, 2, 4, args.n) if n <= args.n})
    print("| n | selector | gold | win vs SFT [95% CI] |\n| --- | --- | --- | --- |")
    for row in best_of_n_table(cands, ns, profile_dir, args.seed):
        win = row["win_rate_vs_sft"]
        lo, hi = win["ci95"]
        print(
            f"| {row['n']} | {row['selector']} | {row['gold']:.3f} | {win['mean']:.3f} [{lo:.3f}, {hi:.3f}] |"
        )
    return 0


def _cmd_eval_export(args: argparse.Namespace) -> int:
    from flows.human_eval import export

    paths = export(args.run, args.n, args.seed)
    print(f"labeling files: {paths['csv']} and {paths['jsonl']} (key: {paths['key']})")
    return 0


def _cmd_eval_import(args: argparse.Namespace) -> int:
    from flows.human_eval import import_labels

    result = import_labels(args.run, args.file)
    for name, row in result["human_eval"]["policies"].items():
        win = row.get("win_rate_vs_sft")
        text = f"win vs sft {win['mean']:.3f} {win['ci95']}" if win else "baseline"
        print(f"{name}: {text}, Likert {row['likert']['mean']}")
    if result.get("gate"):
        print(f"gate ({result['gate']['evidence']}): {result['gate']['reason']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="instructflow",
        description="InstructGPT-style RLHF pipeline on Prefect, MLflow and DVC.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

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
        "--threads", type=int, help="torch CPU threads (default: every core this process may use)"
    )
    run.add_argument(
        "--allow-data-mismatch", action="store_true", help="run even if data/ differs from data.dvc"
    )
    run.add_argument(
        "--params",
        help='JSON file of run settings, {"params": {...}} as the Prefect form sends or the bare fields; '
        "see `instructflow params --example` (command-line flags override it)",
    )
    run.set_defaults(func=_cmd_run)

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
    plan.add_argument("--params", help="JSON file with PipelineParams fields")
    plan.add_argument("--profile", choices=["smoke", "tiny", "small"])
    plan.add_argument("--memory", help="memory to fit, e.g. 24GiB")
    plan.add_argument("--seq-len", type=int, help="tokens per training sequence (default: context)")
    plan.add_argument(
        "--prompt-len", type=int, help="PPO prompt tokens (default: seq-len - response)"
    )
    plan.add_argument(
        "--runtime", action="store_true", help="add this machine's measured runtime RSS to the peak"
    )
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    plan.set_defaults(func=_cmd_plan)

    sweep = sub.add_parser(
        "sweep",
        help="Run the pipeline once per seed and aggregate.",
        description="A seed_sweep flow: one rlhf_pipeline sub-flow run per seed (cores // threads at once), each with its own MLflow run under the sweep's; the sweep's run gets mean, sd, min, max and a seeds-then-prompts 95%% interval per policy and metric (reports/sweeps/<run id>/aggregate.json). Never moves champion.",
    )
    sweep.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    sweep.add_argument("--profile", choices=["smoke", "tiny", "small"], help="default tiny")
    sweep.add_argument("--threads", type=int, help="torch threads per seed (default: all cores)")
    sweep.add_argument("--workers", type=int, help="seeds at once (default: cores // threads)")
    sweep.add_argument("--params", help="JSON file with PipelineParams fields for every seed")
    sweep.set_defaults(func=_cmd_sweep)

    compare = sub.add_parser(
        "compare",
        help="Compare two report.json files.",
        description="Where each report was made (machine, software, threads, seed, commit) and each policy's figures side by side; says when the comparison crosses machines.",
    )
    compare.add_argument("a", help="report.json A")
    compare.add_argument("b", help="report.json B")
    compare.set_defaults(func=_cmd_compare)

    data = sub.add_parser(
        "data", help="Generate, verify or validate data.", description="Data commands."
    )
    data_sub = data.add_subparsers(dest="data_command", required=True)
    gen = data_sub.add_parser(
        "generate",
        help="Regenerate data/ and record it with DVC.",
        description="Regenerate data/ for every profile from a seed, then `dvc add data` and `dvc push`.",
    )
    gen.add_argument(
        "--seed",
        type=int,
        default=0,
        help="world seed (default 0, the version committed in data.dvc)",
    )
    gen.add_argument("--no-dvc", action="store_true", help="write data/ only; leave data.dvc alone")
    gen.set_defaults(func=_cmd_data_generate)
    add = data_sub.add_parser(
        "add",
        help="Validate a dataset directory and put it under DVC.",
        description="Validate DIR (prompts, demonstrations, preferences), then `dvc add DIR` (and push to the default remote); commit DIR.dvc afterwards.",
    )
    add.add_argument("dir", help="the dataset directory, inside the project")
    add.set_defaults(func=_cmd_data_add)
    ver = data_sub.add_parser(
        "verify",
        help="Check data/ against data.dvc.",
        description="Exit 1 if data/ differs from data.dvc.",
    )
    ver.set_defaults(func=_cmd_data_verify)
    val = data_sub.add_parser(
        "validate",
        help="Validate one JSONL table.",
        description="Validate a JSONL file against a table schema.",
    )
    val.add_argument("file", help="path to the JSONL file")
    val.add_argument(
        "--kind",
        required=True,
        choices=KINDS,
        help="which table schema to check against",
    )
    val.set_defaults(func=_cmd_data_validate)

    promote = sub.add_parser(
        "promote",
        help="Make a policy version champion by hand.",
        description="Override the promotion gate: move the champion alias of a registered policy to VERSION.",
    )
    promote.add_argument("--version", required=True, help="version number of the policy")
    promote.add_argument(
        "--model",
        default="instructflow-policy",
        help="registered policy (default instructflow-policy; smoke runs: instructflow-policy-smoke)",
    )
    promote.add_argument(
        "--reason", required=True, help="why the gate is overridden (recorded on the version)"
    )
    promote.set_defaults(func=_cmd_promote)

    evaluate = sub.add_parser(
        "evaluate",
        help="Evaluate registered policies.",
        description="Evaluate registered policy versions or aliases against SFT and against each other.",
    )
    evaluate.add_argument(
        "models",
        nargs="+",
        help="versions or aliases of the registered policy, e.g. champion challenger 3",
    )
    evaluate.add_argument(
        "--model",
        default="instructflow-policy",
        help="registered policy (default instructflow-policy; smoke runs: instructflow-policy-smoke)",
    )
    evaluate.add_argument(
        "--profile", default="tiny", help="whose test users to evaluate on (default tiny)"
    )
    evaluate.add_argument("--seed", type=int, default=0, help="sampling seed")
    evaluate.add_argument(
        "--max-prompts", type=int, default=None, help="evaluate on the first N test prompts only"
    )
    evaluate.set_defaults(func=_cmd_evaluate)

    best = sub.add_parser(
        "best-of-n",
        help="How far the reward model can lift SFT, without RL.",
        description="Sample n SFT responses per test prompt, keep the reward model's favourite (and, for comparison, gold's), and report its gold score and held-out labelers' win rate against other SFT samples. PPO at KL about log(n) nats cannot expect more.",
    )
    best.add_argument("--sft", help="SFT model folder (default: the newest under runs/sft)")
    best.add_argument(
        "--rm", help="reward-model folder (default: the newest under runs/reward_model)"
    )
    best.add_argument("--profile", default="tiny", help="whose test prompts (default tiny)")
    best.add_argument("--n", type=int, default=8, help="largest n (default 8)")
    best.add_argument(
        "--references", type=int, default=3, help="SFT samples each choice is judged against"
    )
    best.add_argument("--prompts", type=int, default=300, help="test prompts (default 300)")
    best.add_argument("--seed", type=int, default=0, help="sampling and labeler seed")
    best.set_defaults(func=_cmd_best_of_n)

    human = sub.add_parser(
        "eval",
        help="Human evaluation of a finished run: export a labeling file, import it ranked.",
        description="The human evaluation round trip: a blinded labeling file out, people's rankings in.",
    )
    human_sub = human.add_subparsers(dest="eval_command", required=True)
    out = human_sub.add_parser(
        "export",
        help="Write a blinded labeling file of a run's test samples.",
        description="Per test prompt, every policy's sample shuffled under labels A, B, C... "
        "(names hidden; the key stays beside the file). Writes reports/<run>/human_eval/"
        "labeling.jsonl and labeling.csv: fill `ranking` (JSONL, best first) or `rank` "
        "(CSV, 1 = best) and `likert` (1-7).",
    )
    out.add_argument("run", help="MLflow run id of the pipeline run, or 'latest'")
    out.add_argument("--n", type=int, default=100, help="test prompts to label (default 100)")
    out.add_argument("--seed", type=int, default=0, help="shuffling seed")
    out.set_defaults(func=_cmd_eval_export)
    back = human_sub.add_parser(
        "import",
        help="Read a ranked labeling file back: win rates, Likert, MLflow, report, gate.",
        description="Computes each policy's win rate against SFT (95% CI over prompts) and "
        "Likert mean from the filled file, logs human/<policy>/... to the run in MLflow, adds "
        "human_eval to its report, and lets the promotion gate decide again on human evidence.",
    )
    back.add_argument("run", help="MLflow run id of the pipeline run, or 'latest'")
    back.add_argument("file", type=Path, help="the filled labeling.csv or labeling.jsonl")
    back.set_defaults(func=_cmd_eval_import)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from flows.params_io import ParamsError
    from models.hub import ModelNotFoundError
    from tasks.data_version import DataMismatchError
    from tasks.outages import ServiceUnreachable
    from tasks.preflight import InputRefused
    from tasks.tables import TableError

    try:
        return args.func(args)
    except (DataMismatchError, TableError, ModelNotFoundError, ParamsError, InputRefused) as error:
        # Bad input: what to fix, without a traceback. Exit 2, as argparse does for bad usage.
        print(f"instructflow: {error}", file=sys.stderr)
        return 2
    except ServiceUnreachable as error:
        print(f"instructflow: {error}", file=sys.stderr)
        return 3
    except BaseException as error:
        return _explain_stop(error)


def _explain_stop(error: BaseException) -> int:
    """A signal, or a server lost mid-run: one line and an exit status; anything else propagates."""
    from prefect.exceptions import TerminationSignal

    from tasks import interrupts, tracking
    from tasks.outages import lost_service_message

    if isinstance(error, KeyboardInterrupt | TerminationSignal):
        detail = (
            f" ({error})" if str(error) and not isinstance(error, interrupts.RunInterrupted) else ""
        )
        print(
            f"instructflow: interrupted by {interrupts.signal_name()}{detail}: MLflow runs marked "
            "KILLED, checkpoints kept under runs/; run the same command again to resume.",
            file=sys.stderr,
        )
        return interrupts.exit_status()
    message = (
        lost_service_message(error, tracking.tracking_uri())
        if isinstance(error, Exception)
        else None
    )
    if message is None:
        raise error
    print(f"instructflow: {message}", file=sys.stderr)
    return 3


if __name__ == "__main__":
    sys.exit(main())
