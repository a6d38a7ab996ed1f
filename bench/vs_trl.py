"""PPO throughput against TRL's (trl.experimental.ppo.PPOTrainer) on the same checkpoint, data and settings.

    make bench-venv
    .bench-venv/bin/python bench/vs_trl.py [--rounds 3] [--iterations 10] [--threads 1 2]

Both sides start from one SFT GPT-2 and one reward model made for the bench
(bench/checkpoint.py: GPT-2 and BPE tokenizer from config, trained on the
embedded world; no hub), read the same training prompts tokenised by the
same code, and share every PPO setting in SETTINGS. Each (round, thread
count, side) runs in a fresh process; rounds interleave the sides and swap
which goes first, so a slow minute of a shared machine hits both. Timed:
the training loop only (model loading and the final evaluation excluded).
Each run also records how many cores other work kept busy meanwhile (the
machine's busy CPU time from /proc/stat less the run's own): the result is
marked LOADED above LOADED_CORES.

Measured per run: episodes/s, the process's peak RSS while training (reset
as the loop starts: loading the world's tables peaks higher on both sides), and the gold score of
the trained policy on the validation users' PPO prompts (both policies
sampled by the same code, same seed): the speed must not come from
learning less. Printed per thread count: median and range of the ratios
(instructflow over TRL) and both gold scores; written to
bench/results/vs_trl.json.

Both sides get the networks from instructflow's loaders, which run GPT-2's
activation as one fused op (instructflow.models.lm.fused_activations): TRL
gets that speed-up too, so the ratio measures the PPO loops alone.
TRL's settings are its fastest fair ones: the whole rollout batch in one
generation and one forward per network (local_rollout_forward_batch_size =
rollout batch), log-probs of the sampled tokens taken from generation (no
extra policy forward), no sample generations or checkpoints during
training, no reporting integration, no gradient checkpointing (PPOConfig
turns it on by default: it recomputes forwards), fp32 like ours (PPOConfig
defaults to bf16), a constant learning rate like ours.
Where TRL cannot do what instructflow does, instructflow is set to TRL's
behaviour (raw RM score: reward_normalization "none"; no RM offset) or
keeps the extra cost (gradient clipping at 1.0: TRL's PPO loop does not clip).
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results" / "vs_trl.json"

# The tiny profile's PPO settings (tasks/ppo.py), shared by both sides.
SETTINGS = {
    "rollout_batch": 64,
    "minibatch_size": 32,
    "ppo_epochs": 2,
    "lr": 1e-4,
    "value_lr": 1e-4,
    "max_new_tokens": 24,
    "temperature": 1.0,
    "kl_beta": 0.2,
    "clip_eps": 0.2,
    "value_clip": 0.2,
    "gamma": 1.0,
    "gae_lambda": 0.95,
    "no_eos_penalty": 1.0,
    "seed": 0,
}
EVAL_SEED = 1234


# ------------------------------------------------------------------ one run (a fresh process)


def reset_peak_rss() -> None:
    """Start the peak RSS (Linux's VmHWM) afresh at the current RSS, so that the peak measured
    is training's, not the set-up's (building the world's tables peaks at ~1.2 GB on both sides)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def load_networks(ckpt):
    """Policy, frozen reference, value model and reward model: the same objects for both sides."""
    from instructflow.models.lm import load_causal_lm
    from instructflow.models.reward_model import reward_model_from_causal_lm

    policy, tokenizer = load_causal_lm(ckpt.sft)
    ref, _ = load_causal_lm(ckpt.sft)
    value, _ = reward_model_from_causal_lm(ckpt.rm)
    reward, rm_tokenizer = reward_model_from_causal_lm(ckpt.rm)
    # TRL reads score(hidden) and knows no offset: the same raw score on both sides.
    for net in (value, reward):
        net.config.reward_offset = 0.0
    return policy, ref, value, reward, tokenizer, rm_tokenizer


def run_instructflow(ckpt, prompts: list[str], iterations: int):
    from instructflow.models.ppo import PPOTrainer
    from instructflow.models.ppo_config import PPOHyper
    from instructflow.models.ppo_loop import ppo_train

    policy, ref, value, reward, tokenizer, rm_tokenizer = load_networks(ckpt)
    settings = {k: v for k, v in SETTINGS.items() if k != "seed"}
    hyper = PPOHyper(iterations=iterations, reward_normalization="none", **settings)
    trainer = PPOTrainer(
        policy, ref, value, reward, tokenizer, rm_tokenizer, hyper, seed=SETTINGS["seed"]
    )
    reset_peak_rss()
    start = time.perf_counter()
    ppo_train(trainer, prompts, None, lambda i, m: None)
    return time.perf_counter() - start, trainer.unwrapped_policy, tokenizer


def run_trl(ckpt, prompts: list[str], iterations: int, out_dir: str):
    from datasets import Dataset
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    from instructflow.models.sampling import encode_prompts

    policy, ref, value, reward, tokenizer, _ = load_networks(ckpt)
    tokenizer.padding_side = (
        "left"  # TRL's collator pads queries; responses must start in one column
    )
    ids = encode_prompts(tokenizer, prompts)
    batch = SETTINGS["rollout_batch"]
    config = PPOConfig(
        output_dir=out_dir,
        seed=SETTINGS["seed"],
        total_episodes=iterations * batch,
        # One optimizer step per minibatch: micro batch = rollout batch / num_mini_batches
        # with no gradient accumulation (TRL's rollout batch is per_device * accumulation).
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        num_mini_batches=batch // SETTINGS["minibatch_size"],
        local_rollout_forward_batch_size=batch,
        num_ppo_epochs=SETTINGS["ppo_epochs"],
        learning_rate=SETTINGS["lr"],
        lr_scheduler_type="constant",
        response_length=SETTINGS["max_new_tokens"],
        temperature=SETTINGS["temperature"],
        stop_token="eos",
        missing_eos_penalty=SETTINGS["no_eos_penalty"],
        kl_coef=SETTINGS["kl_beta"],
        kl_estimator="k1",
        cliprange=SETTINGS["clip_eps"],
        cliprange_value=SETTINGS["value_clip"],
        vf_coef=1.0,  # one AdamW over both networks; ours gives the value loss weight 1
        gamma=SETTINGS["gamma"],
        lam=SETTINGS["gae_lambda"],
        whiten_rewards=False,
        num_sample_generations=0,
        save_strategy="no",
        report_to="none",
        logging_steps=10**6,
        disable_tqdm=True,
        use_cpu=True,
        bf16=False,  # PPOConfig's default is True: fp32 on both sides
        fp16=False,
        gradient_checkpointing=False,  # PPOConfig's default is True: a second forward per step
        dataloader_num_workers=0,
    )
    dataset = Dataset.from_dict({"input_ids": ids})
    trainer = PPOTrainer(
        args=config,
        processing_class=tokenizer,
        model=policy,
        ref_model=ref,
        reward_model=reward,
        train_dataset=dataset,
        value_model=value,
        eval_dataset=dataset.select(range(batch)),
    )
    reset_peak_rss()
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    tokenizer.padding_side = "right"
    return seconds, trainer.accelerator.unwrap_model(trainer.model).policy, tokenizer


def gold_score(policy, tokenizer, ckpt, n_prompts: int = 256) -> list[float]:
    """Gold score per validation prompt of one sampled response (same sampler and seed for both sides)."""
    import torch

    from instructflow.models.sampling import generate
    from instructflow.tasks.tables import read_jsonl
    from instructflow.world import layout
    from instructflow.world.judge import GoldJudge

    rows = read_jsonl(ckpt.profile_dir / layout.PPO_VALID)[:n_prompts]
    judge = GoldJudge.load(ckpt.profile_dir)
    policy.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(EVAL_SEED)
        ro = generate(
            policy,
            tokenizer,
            [r["prompt"] for r in rows],
            SETTINGS["max_new_tokens"],
            SETTINGS["temperature"],
        )
    return [judge.score(r["prompt_id"], t) for r, t in zip(rows, ro.texts, strict=True)]


def checkpoints(kind: str):
    from bench import checkpoint

    return checkpoint.build() if kind == "trained" else checkpoint.untrained()


def worker(side: str, threads: int, iterations: int, kind: str, out: Path) -> None:
    import torch

    torch.set_num_threads(threads)
    from instructflow.tasks.tables import read_jsonl
    from instructflow.world import layout

    ckpt = checkpoints(kind)
    prompts = [r["prompt"] for r in read_jsonl(ckpt.profile_dir / layout.PPO_TRAIN)]
    with tempfile.TemporaryDirectory() as tmp:
        if side == "instructflow":
            seconds, policy, tokenizer = run_instructflow(ckpt, prompts, iterations)
        else:
            seconds, policy, tokenizer = run_trl(ckpt, prompts, iterations, tmp)
    peak_rss = peak_rss_bytes()  # the training loop's peak (reset when it started)
    golds = gold_score(policy, tokenizer, ckpt)
    episodes = iterations * SETTINGS["rollout_batch"]
    out.write_text(
        json.dumps(
            {
                "side": side,
                "threads": threads,
                "episodes": episodes,
                "seconds": seconds,
                "episodes_per_s": episodes / seconds,
                "peak_rss_bytes": peak_rss,
                "gold": golds,
            }
        )
    )


# ------------------------------------------------------------------ the rounds


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def gold_summary(golds: list[float]) -> dict:
    mean = sum(golds) / len(golds)
    se = statistics.stdev(golds) / len(golds) ** 0.5
    return {"mean": mean, "ci95": [mean - 1.96 * se, mean + 1.96 * se], "prompts": len(golds)}


def load_average() -> list[float]:
    return list(os.getloadavg())


# Other work, in cores kept busy on average while a run ran, above which the machine is
# called loaded. The load average cannot say: right after a run at 2 threads it is ~1.7 on
# an otherwise idle 2-core machine, the run's own threads counted.
LOADED_CORES = 0.25


def busy_cpu_seconds() -> float:
    """CPU seconds the machine's cores have spent busy since boot (/proc/stat, Linux)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU seconds of this process's finished (waited-for) children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_worker(command: list[str], env: dict[str, str]) -> float:
    """Run a worker process; the cores other work kept busy meanwhile, on average (the
    machine's busy CPU seconds less the worker's, over the wall time)."""
    start, busy, own = time.perf_counter(), busy_cpu_seconds(), children_cpu_seconds()
    subprocess.run(command, check=True, env=env, cwd=ROOT)
    other = (busy_cpu_seconds() - busy) - (children_cpu_seconds() - own)
    return max(0.0, other) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=10, help="PPO iterations per run")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--checkpoint",
        choices=["trained", "untrained"],
        default="trained",
        help="trained: SFT + RM of bench/checkpoint.py (minutes to build once); untrained: "
        "a GPT-2 from config (responses run to the length limit, gold says nothing)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", choices=["instructflow", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.threads[0], args.iterations, args.checkpoint, args.result)
        return

    print("[bench] checkpoints:", checkpoints(args.checkpoint), flush=True)  # before any timed run
    runs: list[dict] = []
    loads = [load_average()]
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for threads in args.threads:
                sides = ["instructflow", "trl"] if round_ % 2 == 0 else ["trl", "instructflow"]
                for side in sides:
                    result = Path(tmp) / f"{round_}-{threads}-{side}.json"
                    env = {
                        **os.environ,
                        "OMP_NUM_THREADS": str(threads),
                        "MKL_NUM_THREADS": str(threads),
                    }
                    other_cores = run_worker(
                        [sys.executable, __file__, "--worker", side, "--threads", str(threads),
                         "--iterations", str(args.iterations), "--checkpoint", args.checkpoint,
                         "--result", str(result)],
                        env,
                    )  # fmt: skip
                    run = json.loads(result.read_text()) | {
                        "round": round_,
                        "other_work_cores": round(other_cores, 3),
                    }
                    runs.append(run)
                    loads.append(load_average())
                    print(
                        f"[bench] round {round_} threads {threads} {side}: "
                        f"{run['episodes_per_s']:.1f} episodes/s, "
                        f"peak RSS {run['peak_rss_bytes'] / 2**20:.0f} MiB, "
                        f"gold {sum(run['gold']) / len(run['gold']):.3f}, "
                        f"other work {other_cores:.2f} cores, load {loads[-1][0]:.1f}",
                        flush=True,
                    )
            report(
                runs, loads, args, round_ + 1
            )  # after every round: a cut-short run still reports


def report(runs: list[dict], loads: list[list[float]], args, n_rounds: int) -> None:
    import torch
    import transformers
    import trl

    threads_out = {}
    for threads in args.threads:

        def pick(side, key, round_, t=threads):
            return next(
                r[key]
                for r in runs
                if r["side"] == side and r["threads"] == t and r["round"] == round_
            )

        rounds = range(n_rounds)
        speed = [
            pick("instructflow", "episodes_per_s", i) / pick("trl", "episodes_per_s", i)
            for i in rounds
        ]
        rss = [
            pick("instructflow", "peak_rss_bytes", i) / pick("trl", "peak_rss_bytes", i)
            for i in rounds
        ]
        ours = [g for i in rounds for g in [pick("instructflow", "gold", i)]]
        theirs = [g for i in rounds for g in [pick("trl", "gold", i)]]
        threads_out[str(threads)] = {
            "episodes_per_s_ratio": spread(speed),
            "peak_rss_ratio": spread(rss),
            "gold_after_equal_episodes": {
                "instructflow": gold_summary(ours[0]) | {"runs": [sum(g) / len(g) for g in ours]},
                "trl": gold_summary(theirs[0]) | {"runs": [sum(g) / len(g) for g in theirs]},
            },
            "episodes_per_s": {
                side: spread([pick(side, "episodes_per_s", i) for i in rounds])
                for side in ("instructflow", "trl")
            },
        }
        t = threads_out[str(threads)]
        print(
            f"threads {threads}: episodes/s ratio median {t['episodes_per_s_ratio']['median']:.2f} "
            f"[{t['episodes_per_s_ratio']['min']:.2f}, {t['episodes_per_s_ratio']['max']:.2f}]; "
            f"peak RSS ratio median {t['peak_rss_ratio']['median']:.2f} "
            f"[{t['peak_rss_ratio']['min']:.2f}, {t['peak_rss_ratio']['max']:.2f}]; "
            f"gold instructflow {t['gold_after_equal_episodes']['instructflow']['mean']:.3f} "
            f"vs trl {t['gold_after_equal_episodes']['trl']['mean']:.3f}"
        )
    other = max(r["other_work_cores"] for r in runs)
    cores = os.cpu_count() or 1
    machine = (
        f"{platform.machine()} {cores} cores, {platform.system()}; torch {torch.__version__}, "
        f"transformers {transformers.__version__}, trl {trl.__version__}; "
        + (
            f"LOADED machine (other work kept up to {other:.2f} of {cores} cores busy during "
            "a run: shared while measured)"
            if other > LOADED_CORES
            else f"quiet machine (other work at most {other:.2f} cores during any run)"
        )
    )
    print(machine)
    result = {
        "machine": machine,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "command": " ".join(["vs_trl.py", *sys.argv[1:]]),
        "threads": threads_out,
        "settings": SETTINGS | {"iterations": args.iterations, "rounds": n_rounds},
        "checkpoint": args.checkpoint,
        "load_average_1min": [load[0] for load in loads],
        "runs": [{k: v for k, v in r.items() if k != "gold"} for r in runs],
    }
    from bench import readme

    readme.save(result, args.out, RESULTS)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
