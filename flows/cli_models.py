"""Subcommands about trained and registered models: promote, evaluate, best-of-n, eval (human evaluation)."""

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from instructflow.tasks.paths import project_root, reports_dir
from instructflow.world import layout

# The models best-of-n uses, by stage (their folders come from a report's stage keys).
STAGES = ("sft", "reward_model")


def at_least_one(text: str) -> int:
    """A count flag's value: 0 or a negative number was taken as a slice bound (`--n -3`
    left the last 3 prompts out without a word, `--n 0` wrote an empty labeling file)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def _cmd_promote(args: argparse.Namespace) -> int:
    from instructflow.tasks import tracking
    from instructflow.tasks.promotion import promote_manually
    from instructflow.tasks.registry_config import RegistryConfig

    if not args.reason.strip():
        print("instructflow: a manual promotion needs a reason (--reason)", file=sys.stderr)
        return 2
    tracking.setup()
    model = args.model or RegistryConfig().names(args.profile)[0]
    with _registry_slot():
        moved = promote_manually(args.version, args.reason, model)
    if moved:
        print(f"{model} v{args.version} is now champion (manual: {args.reason})")
    else:
        print(f"{model} v{args.version} is champion already: nothing changed")
    return 0


# Printed once if a promotion gate (or an approval, or another `promote`) holds the slot.
REGISTRY_WAIT = "waiting for the registry: a promotion gate is in progress"


@contextmanager
def _registry_slot() -> Iterator[None]:
    """The registry's slot while inside, as a gate holds it (tasks/concurrency.py), where a
    Prefect API is set; none without one: starting Prefect's temporary server would cost
    a one-second command seconds more (docs/registry.md says what that leaves open)."""
    from instructflow.tasks import leftovers, outages

    # Prefect's own resolved setting, as a run's gate sees it: exported, or in the profile
    # (`prefect config set PREFECT_API_URL=...`); the variable alone missed the profile's.
    if not outages.prefect_api_url():
        yield
        return
    from instructflow.tasks.concurrency import ensure_limits, registry_slot

    # Alive while it holds the slot: a run starting meanwhile frees the slot only when no
    # run of this project is alive (tasks/leftovers.py), and would free this one's.
    token = leftovers.register()[leftovers.TAG_TOKEN]
    try:
        ensure_limits()  # a limit not created yet (no run so far) would hold nothing
        # A lost server fails at once with one line (nothing done would be lost by it).
        with registry_slot(waiting=REGISTRY_WAIT, outage_wait=False):
            yield
    finally:
        leftovers.unregister(token)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from mlflow import MlflowClient

    from instructflow.tasks import tracking
    from instructflow.tasks.registry_config import RegistryConfig
    from instructflow.tasks.registry_lookup import evaluable_version

    tracking.setup()
    model = args.model or RegistryConfig().names(args.profile)[0]
    for ref in args.models:  # a version that is not there: one line here, not a failed flow,
        evaluable_version(MlflowClient(), model, ref)  # before torch and Prefect are imported
    from instructflow.flows.evaluate import EvaluateParams, evaluate_registered
    from instructflow.tasks import temporary_server

    temporary_server.prepare()  # its flow starts Prefect's temporary server without PREFECT_API_URL
    result = evaluate_registered(
        EvaluateParams(
            models=args.models,
            model_name=model,
            profile=args.profile,
            seed=args.seed,
            evaluation={"max_prompts": args.max_prompts},
        )
    )
    for name, row in result["policies"].items():
        print(
            f"{name}: gold {row['gold_score']['mean']:.3f}  win vs SFT {row['win_rate_vs_sft']['mean']:.3f}"
        )
    for name, match in result["head_to_head"].items():
        low, high = match["win_rate"]["ci95"]
        print(f"{name}: win rate {match['win_rate']['mean']:.3f} (95% CI {low:.3f}-{high:.3f})")
    if not result["head_to_head"] and len(args.models) > 1:
        print(f"no head-to-head: {' and '.join(args.models)} name one version")
    return 0


def _world_models(profile: str) -> tuple[Path, Path] | None:
    """SFT and RM of the newest run on the embedded world's `profile` (best-of-n scores by
    gold, which only the embedded world has): from its report's stage keys; None if none."""
    reports = sorted(reports_dir().glob("*/report.json"), key=lambda p: p.stat().st_mtime)
    for path in reversed(reports):
        report = json.loads(path.read_text())
        keys = report.get("run", {}).get("stage_keys", {})
        if report.get("dataset") or report.get("run", {}).get("profile") != profile:
            continue
        models = [project_root() / "runs" / s / keys.get(s, "-") / "model" for s in STAGES]
        if all(m.is_dir() for m in models):
            return models[0], models[1]
    return None


def _cmd_best_of_n(args: argparse.Namespace) -> int:
    from instructflow.tasks.best_of_n import best_of_n_table, sample_candidates

    found = (None, None) if args.sft and args.rm else _world_models(args.profile)
    if found is None:
        print(
            f"instructflow: no finished run on the embedded world's {args.profile} profile with "
            f"its SFT and RM under runs/ (best-of-n scores by gold, which a dataset has not): "
            f"run `instructflow run --profile {args.profile}` first, or pass --sft and --rm",
            file=sys.stderr,
        )
        return 2
    sft, rm = Path(args.sft or found[0]), Path(args.rm or found[1])
    profile_dir = project_root() / "data" / args.profile
    if not (profile_dir / layout.EVAL_TEST).is_file():  # --sft/--rm given, data/ not restored
        print(
            f"instructflow: best-of-n samples the embedded world's {args.profile} test prompts "
            f"and scores them by gold, and {profile_dir / layout.EVAL_TEST} is not there: run "
            f"`instructflow run --profile {args.profile}` first (it restores data/); a model "
            "trained on your dataset is scored by its run's held-out judge instead",
            file=sys.stderr,
        )
        return 2
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
    from instructflow.flows.human_eval import export

    paths = export(args.run, args.n, args.seed)
    print(f"labeling files: {paths['csv']} and {paths['jsonl']} (key: {paths['key']})")
    return 0


def _cmd_eval_import(args: argparse.Namespace) -> int:
    from instructflow.flows.human_eval import import_labels

    result = import_labels(args.run, args.file)
    for name, row in result["human_eval"]["policies"].items():
        win = row.get("win_rate_vs_sft")
        # As the report writes them: 3 decimals (the CI's bounds came out as 0.3333333333333333)
        ci = f"[{win['ci95'][0]:.3f}, {win['ci95'][1]:.3f}]" if win else ""
        text = f"win vs sft {win['mean']:.3f} {ci}" if win else "baseline"
        likert = row["likert"]["mean"]  # None when the file gave no Likert scores
        print(f"{name}: {text}, Likert {'none given' if likert is None else f'{likert:.2f}'}")
    # where to read it all, as export says where its files are
    report_md = reports_dir() / result["run"]["mlflow_run_id"] / "report.md"
    print(f"report: {report_md} (and the MLflow run's report/)")
    gate = result.get("gate")
    if gate:
        print(f"gate ({gate['evidence']}): {gate['reason']}")
        name, version, champion = gate["model_name"], gate["policy_version"], gate.get("champion")
        before = gate.get("champion_before", champion)
        if str(before) != str(champion):  # people's verdict moved it: say so, not only where
            shown = [f"v{c}" if c else "none" for c in (before, champion)]
            print(f"{name}: champion moved {shown[0]} -> {shown[1]} on people's rankings")
        if str(champion) == str(version):
            print(f"{name} v{version} is champion")
        else:
            print(
                f"{name} v{version} is not champion (champion: {f'v{champion}' if champion else 'none'})"
            )
    return 0


def add_commands(sub) -> None:
    """Register these subcommands on the `instructflow` parser."""
    promote = sub.add_parser(
        "promote",
        help="Make a policy version champion by hand.",
        description="Override the promotion gate: move the champion alias of a registered policy to VERSION.",
    )
    promote.add_argument("--version", required=True, help="version number of the policy")
    promote.add_argument(
        "--model",
        help="registered policy (default: where runs of --profile register, "
        "instructflow-policy or instructflow-policy-smoke)",
    )
    promote.add_argument(
        "--profile", default="tiny", help="whose registered policy, without --model (default tiny)"
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
        default=None,
        help="registered policy (default: where runs of --profile register, "
        "instructflow-policy or instructflow-policy-smoke)",
    )
    evaluate.add_argument(
        "--profile", default="tiny", help="whose test users to evaluate on (default tiny)"
    )
    evaluate.add_argument("--seed", type=int, default=0, help="sampling seed")
    evaluate.add_argument(
        "--max-prompts",
        type=at_least_one,
        default=None,
        help="evaluate on the first N test prompts only",
    )
    evaluate.set_defaults(func=_cmd_evaluate)

    best = sub.add_parser(
        "best-of-n",
        help="How far the reward model can lift SFT, without RL.",
        description="Sample n SFT responses per test prompt, keep the reward model's favourite (and, for comparison, gold's), and report its gold score and held-out labelers' win rate against other SFT samples. PPO at KL about log(n) nats cannot expect more.",
    )
    newest = "the newest finished run's on the embedded world's --profile"
    best.add_argument("--sft", help=f"SFT model folder (default: {newest})")
    best.add_argument("--rm", help=f"reward-model folder (default: {newest})")
    best.add_argument("--profile", default="tiny", help="whose test prompts (default tiny)")
    best.add_argument("--n", type=at_least_one, default=8, help="largest n (default 8)")
    best.add_argument(
        "--references",
        type=at_least_one,
        default=3,
        help="SFT samples each choice is judged against",
    )
    best.add_argument(
        "--prompts", type=at_least_one, default=300, help="test prompts (default 300)"
    )
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
    out.add_argument(
        "--n", type=at_least_one, default=100, help="test prompts to label (default 100)"
    )
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
