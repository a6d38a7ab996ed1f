"""Time PPO iterations (rollout vs update, wall and CPU) with the stage's default settings.

    OMP_NUM_THREADS=1 .venv/bin/python bench/ppo_iteration.py --sft runs/sft/<key>/model \
        --rm runs/reward_model/<key>/model --profile tiny --iterations 5

Without --sft/--rm it builds a tiny-profile-sized GPT-2 (4 x 128) and an RM
from it, untrained: responses then run to the length limit, the slowest case.
Prints one JSON object. One thread by default: this is what a stage gets on
a 2-core machine shared with other work.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from instructflow.models.lm import GPT2Size, build_gpt2, load_causal_lm, save_model
from instructflow.models.ppo import PPOTrainer
from instructflow.models.ppo_loop import ppo_train
from instructflow.models.reward_model import reward_model_from_causal_lm
from instructflow.models.tokenizer import train_tokenizer
from instructflow.tasks.ppo_config import PPOStageConfig, trainer_hyper
from instructflow.tasks.tables import read_jsonl
from instructflow.world import layout


def untrained_checkpoint(prompts: list[str], folder: Path) -> Path:
    tokenizer = train_tokenizer(prompts, vocab_size=1024)
    model = build_gpt2(
        tokenizer, GPT2Size(n_layer=4, n_head=4, n_embd=128, n_positions=256), seed=0
    )
    save_model(model, tokenizer, folder / "sft")
    return folder / "sft"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sft", type=Path, help="SFT model directory (default: untrained GPT-2)")
    parser.add_argument("--rm", type=Path, help="reward model directory (default: from --sft)")
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    prompts = [r["prompt"] for r in read_jsonl(Path("data") / args.profile / layout.PPO_TRAIN)]
    with tempfile.TemporaryDirectory() as tmp:
        sft = args.sft or untrained_checkpoint(prompts, Path(tmp))
        rm_dir = args.rm or sft
        policy, tokenizer = load_causal_lm(sft)
        ref, _ = load_causal_lm(sft)
        value, _ = reward_model_from_causal_lm(rm_dir)
        rm, rm_tokenizer = reward_model_from_causal_lm(rm_dir)
        cfg = PPOStageConfig(iterations=args.iterations, reference_samples=64)
        trainer = PPOTrainer(policy, ref, value, rm, tokenizer, rm_tokenizer, trainer_hyper(cfg))
        seen: list[dict] = []
        start, cpu = time.perf_counter(), time.process_time()
        ppo_train(trainer, prompts, None, lambda i, m: seen.append(m))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu

    n = len(seen)
    print(
        json.dumps(
            {
                "iterations": n,
                "rollout_batch": cfg.rollout_batch,
                "threads": args.threads,
                "seconds_per_iteration": sum(m["ppo/seconds"] for m in seen) / n,
                "rollout_seconds_per_iteration": sum(m["ppo/seconds_rollout"] for m in seen) / n,
                "response_len": sum(m["ppo/response_len"] for m in seen) / n,
                "total_wall_seconds": wall,
                "total_cpu_seconds": cpu,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
