"""Run many variants of the pipeline's training stages side by side, without Prefect or MLflow.

What it is for: finding out what moves the acceptance figures (reward-model
accuracy against gold, PPO's win rate against SFT) before changing a default.
Each variant runs base model -> SFT -> comparisons -> reward model -> PPO ->
evaluation (SFT and the PPO policy only) through the stages' plain functions,
in its own process and folder, so several run at once on a many-core or GPU
machine. Nothing is registered or tracked: results land in WORK/<name>/results.json
and in one summary file.

    python scripts/stage_sweep.py scripts/sweeps/ppo_settings.json --parallel 6
    python scripts/stage_sweep.py --show summary.json

A variant is a JSON object:
    {"name": "b10", "seed": 0,
     "base": {...BaseModelConfig}, "sft": {...}, "comparisons": {...}, "evaluation": {...},
     "rms": [{"name": "rm", ...RewardModelConfig}],          # default: one "rm"
     "ppos": [{"name": "ppo", "rm": "rm", "gamma": 0.0, ...PPOStageConfig}],
     "judge": {...JudgeConfig},  # optional: a held-out judge beside gold and the labelers
     "reuse": "other-variant",   # take base/SFT/comparisons/RMs from that variant
     "world": {"gold": {"CONCISE_WEIGHT": 0.5}, "profile": {"pretrain_docs": 20000}}}

"world" patches the embedded world for this variant only (module constants of
instructflow.world.gold/people/families/responses, fields of the tiny WorldSize) and regenerates its data in its own
folder: a what-if for the world's design, never a change to data.dvc.

On a machine without Prefect or MLflow (a lent GPU machine has torch and
transformers but neither), --stub-orchestration replaces both with inert
stand-ins: the plain stage functions never need them, only their wrappers do.
"""

import argparse
import dataclasses
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# Every submodule the stage modules import from prefect or mlflow.
STUBBED_SUBMODULES = (
    "",
    ".data",
    ".tracking",
    ".client",
    ".client.orchestration",
    ".client.schemas",
    ".client.schemas.actions",
    ".concurrency",
    ".concurrency.sync",
    ".exceptions",
)


def stub_orchestration() -> None:
    """Inert prefect/mlflow modules where the real ones are missing.

    The repository's mlflow/ folder (the tracking store) imports as an empty
    namespace package, so "importable" is not enough: a real package has a version.
    """
    import accelerate  # noqa: F401  (it probes for mlflow on import: before the stand-ins)

    for name in ("prefect", "mlflow"):
        try:
            if getattr(importlib.import_module(name), "__version__", None):
                continue
        except ImportError:
            pass
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]
        stand_in = mock.MagicMock()
        for sub in STUBBED_SUBMODULES:
            sys.modules[name + sub] = stand_in


# World modules whose constants a variant may patch (difficulty, habits, grading).
PATCHABLE_WORLD_MODULES = ("gold", "people", "families", "responses")


def apply_world_patch(patch: dict) -> None:
    """Set the world's constants as the patch says, in this process.

    {"families": {"ADD_MAX": 19}} sets instructflow.world.families.ADD_MAX; a dict-valued
    constant is updated key by key; "profile" replaces fields of the tiny WorldSize.
    """
    import instructflow.world.profiles

    for module_name, constants in patch.items():
        if module_name == "profile":
            continue
        if module_name not in PATCHABLE_WORLD_MODULES:
            raise ValueError(f"cannot patch instructflow.world.{module_name}")
        module = importlib.import_module(f"instructflow.world.{module_name}")
        for name, value in constants.items():
            if not hasattr(module, name):
                raise ValueError(f"instructflow.world.{module_name} has no {name}")
            current = getattr(module, name)
            setattr(module, name, {**current, **value} if isinstance(current, dict) else value)
    if patch.get("profile"):
        tiny = instructflow.world.profiles.PROFILES["tiny"]
        instructflow.world.profiles.PROFILES["tiny"] = dataclasses.replace(tiny, **patch["profile"])


def patch_world(patch: dict, folder: Path) -> Path | None:
    """Apply a variant's world patch and write its data; None when there is no patch."""
    if not patch:
        return None
    from instructflow.tasks.data import write_profile
    from instructflow.world import layout

    apply_world_patch(patch)
    if not (folder / layout.SFT_TRAIN).exists():
        write_profile(folder, "tiny", 0)
    return folder


def run_variant(variant: dict, work: Path, profile_dir: Path) -> None:
    """All stages of one variant; a stage whose output exists is not run again."""
    import torch

    from instructflow.tasks import (
        base_model,
        comparisons,
        evaluation,
        judge,
        judge_trust,
        ppo,
        reward_model,
        sft,
    )
    from instructflow.world import layout

    out = work / variant["name"]
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    seed = variant.get("seed", 0)
    profile_dir = patch_world(variant.get("world", {}), out / "data") or profile_dir
    results: dict = {"variant": variant}
    started = time.time()

    def save() -> None:
        results["seconds"] = time.time() - started
        (out / "results.json").write_text(json.dumps(results, indent=1))

    def log(step: int, metrics: dict, *_progress) -> None:
        with open(out / "log.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")

    rms = variant.get("rms", [{"name": "rm"}])
    if variant.get("reuse"):
        # Absolute: a link's relative target would be read from the link's own folder.
        source = (work / variant["reuse"]).resolve()
        while not (source / "STAGES_DONE").exists():  # the other variant is still training
            time.sleep(3)
        for stage in ("base", "sft", "comparisons", *[rm["name"] for rm in rms]):
            if not (out / stage).exists():
                (out / stage).symlink_to(source / stage)
        rms = []
    if not (out / "base" / "model").exists():
        cfg = base_model.BaseModelConfig(**variant.get("base", {}))
        results["base"] = base_model.build_base_model(
            profile_dir, None, cfg, seed, out / "base", log
        )
        save()
    if not (out / "sft" / "model").exists():
        cfg = sft.SFTConfig(**variant.get("sft", {}))
        results["sft"] = sft.finetune(
            out / "base" / "model",
            profile_dir / layout.SFT_TRAIN,
            profile_dir / layout.SFT_VALID,
            "demonstrations",
            cfg,
            seed,
            out / "sft",
            log,
        )
        save()
    sft_dir = out / "sft" / "model"
    if not (out / "comparisons" / comparisons.HELDOUT_GOLD).exists():
        (out / "comparisons").mkdir(parents=True, exist_ok=True)
        cfg = comparisons.ComparisonsConfig(**variant.get("comparisons", {}))
        results["comparisons"] = comparisons.collect(
            sft_dir, profile_dir, cfg, seed, out / "comparisons"
        )
        save()
    results["rm"] = {}
    for rm in rms:
        cfg = reward_model.RewardModelConfig(**{k: v for k, v in rm.items() if k != "name"})
        (out / rm["name"]).mkdir(parents=True, exist_ok=True)
        results["rm"][rm["name"]] = reward_model.train_reward_model(
            sft_dir, out / "comparisons", profile_dir, cfg, seed, out / rm["name"], log
        )
        save()
    judge_dir = None
    if "judge" in variant:  # trained beside the RMs, on the held-out rankings only
        judge_dir = out / "judge"
        if not (judge_dir / "model").exists():
            judge_dir.mkdir(parents=True, exist_ok=True)
            cfg = judge.JudgeConfig(**variant["judge"])
            results["judge"] = judge.train_judge_on_comparisons(
                sft_dir, profile_dir, out / "comparisons", cfg, seed, judge_dir, log
            )
            save()
    (out / "STAGES_DONE").write_text("")

    results["ppo"] = {}
    eval_cfg = evaluation.EvalConfig(**variant.get("evaluation", {}))
    for run in variant.get("ppos", []):
        cfg = ppo.PPOStageConfig(
            **{k: v for k, v in run.items() if k not in ("name", "rm", "gamma")}
        )
        rm_dir = out / run.get("rm", "rm") / "model"
        gamma = run.get("gamma", 0.0)
        stage = "ppo_ptx" if gamma else "ppo"
        summary = ppo.run_ppo(
            stage, sft_dir, rm_dir, profile_dir, cfg, gamma, seed, out / run["name"], log
        )
        policies = [
            evaluation.Policy("sft", sft_dir),
            evaluation.Policy(run["name"], out / run["name"] / "model"),
        ]
        rows, raw = evaluation.evaluate(
            policies, sft_dir, rm_dir, profile_dir, eval_cfg, seed, judge_dir
        )
        results["ppo"][run["name"]] = {**summary, "eval": rows}
        if judge_dir:
            trained = judge.HeldOutJudge.load(judge_dir).trained_prompts
            results["ppo"][run["name"]]["judge_agreement"] = judge_trust.agreement_block(
                raw, trained
            )
        save()


def drive(variants: list[dict], parallel: int, work: Path, summary_path: Path, stub: bool) -> None:
    """Each variant in its own process, `parallel` at a time; the summary is rewritten as they end."""
    profile_dir = work / "data-tiny"
    if not profile_dir.exists():
        subprocess.run([sys.executable, __file__, "--write-data", str(profile_dir)], check=True)
    pending, running = list(variants), []

    def write_summary() -> None:
        summary = {}
        for variant in variants:
            results = work / variant["name"] / "results.json"
            log = work / f"{variant['name']}.log"
            summary[variant["name"]] = json.loads(results.read_text()) if results.exists() else {}
            summary[variant["name"]]["log_tail"] = log.read_text()[-3000:] if log.exists() else ""
        summary_path.write_text(json.dumps(summary, indent=1))

    while pending or running:
        while pending and len(running) < parallel:
            variant = pending.pop(0)
            command = [sys.executable, __file__, "--one", json.dumps(variant)]
            command += ["--work", str(work), "--data", str(profile_dir)]
            command += ["--stub-orchestration"] if stub else []
            log = open(work / f"{variant['name']}.log", "w")
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            running.append((variant["name"], process, log, time.time()))
        time.sleep(2)
        for item in list(running):
            name, process, log, began = item
            if process.poll() is not None:
                running.remove(item)
                log.close()
                print(f"{name}: exit {process.returncode} after {time.time() - began:.0f}s")
                write_summary()
    write_summary()


def show(summary: dict) -> None:
    """One block per variant: RM accuracy, then SFT and each PPO policy on test users."""
    for name, result in summary.items():
        rms = {
            rm: f"{m['rm/accuracy_vs_gold']:.3f} vs gold, {m['rm/accuracy_heldout_labels']:.3f} vs labels"
            for rm, m in (result.get("rm") or {}).items()
        }
        print(f"== {name}: {rms or ''}")
        if result.get("judge"):
            j = result["judge"]
            print(
                f"  judge: {j['judge/training_pairs']:.0f} pairs, accuracy"
                f" {j['judge/accuracy_heldout_pairs']:.3f} on held-out pairs"
            )
        for run, ppo_result in (result.get("ppo") or {}).items():
            for policy, row in ppo_result["eval"].items():
                low, high = row["win_rate_vs_sft"]["ci95"]
                families = " ".join(
                    f"{fam[:5]}={r['gold_score']:.2f}" for fam, r in row["per_family"].items()
                )
                print(
                    f"  {run}/{policy}: gold {row['gold_score']['mean']:.3f}"
                    f"  win {row['win_rate_vs_sft']['mean']:.3f} [{low:.3f}, {high:.3f}]"
                    f"  KL {row['kl_to_sft']:.2f}  {families}"
                )
            agreement = ppo_result.get("judge_agreement")
            if agreement:
                unseen = agreement["unseen_prompts"]
                print(
                    f"  {run}: agreement with gold: judge {agreement['judge']:.3f},"
                    f" held-out labelers {agreement['heldout_labelers']:.3f}"
                    f" ({agreement['pairs']} pairs); on prompts the judge never saw"
                    f" {unseen['judge']:.3f} vs {unseen['heldout_labelers']:.3f}"
                )
        if not result.get("ppo") and result.get("log_tail"):
            print(result["log_tail"][-800:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="?", help="JSON file: a list of variants")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--work", default="/tmp/stage-sweep")
    parser.add_argument("--summary", default=None, help="default: WORK/summary.json")
    parser.add_argument("--stub-orchestration", action="store_true")
    parser.add_argument("--show", metavar="SUMMARY_JSON")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--write-data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.show:
        show(json.loads(Path(args.show).read_text()))
        return
    from instructflow.tasks.env import apply_defaults

    apply_defaults()  # what the CLI sets (offline Hub, quiet tokenizers), before any stage import
    if args.stub_orchestration or args.write_data:
        stub_orchestration()
    if args.write_data:
        from instructflow.tasks.data import write_profile

        write_profile(Path(args.write_data), "tiny", 0)
    elif args.one:
        run_variant(json.loads(args.one), Path(args.work), Path(args.data))
    elif args.variants:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        summary = Path(args.summary) if args.summary else work / "summary.json"
        variants = json.loads(Path(args.variants).read_text())
        drive(variants, args.parallel, work, summary, args.stub_orchestration)
        show(json.loads(summary.read_text()))
    else:
        parser.error("give a variants file, or --show SUMMARY_JSON")


if __name__ == "__main__":
    main()
