"""Tokens/s and model FLOPs utilisation (MFU) of SFT and RM training steps.

    .venv/bin/python bench/mfu.py [--threads 1] [--steps 20]

The peak is measured in the same process and at the same thread count: the
best of several fp32 square matmuls (2 n^3 FLOPs each). A training step is
what the stages run, with their own functions: SFT `collate_sft` batches of
demonstrations, `sft_loss_sum` (the output layer only from the first
position that predicts a response token), backward, gradient clipping and
`runtime.adamw`; RM K responses per prompt, `rewards`, the K-wise loss,
backward, clipping, `runtime.adamw`. On the bench's checkpoints
(bench/checkpoint.py). Model FLOPs (PaLM's appendix B): 6 * N_body + 12 *
n_layer * T * d per real (non-pad) token, T the padded length of the batch,
N_body the weights that take part in matmuls below the output layer; plus 6
* N_head per position whose logits the loss needs (SFT: those that predict a
response token). Padding and logits computed for nothing count as waste,
not as work. Each step runs eager and then with the stages' `torch_compile`
(runtime.compiled_trunk), side by side in the same run against the same peak;
a compiled step's first calls (the compile) are timed apart, not as steps.
Each eager step's matmuls are also replayed alone (bench/matmul_ceiling.py,
`matmuls_alone`): how close to the peak matmuls of those shapes come at
best, and what share of the step's time they take.
Prints one JSON object; writes bench/results/mfu.json.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "mfu.json"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def matmul_peak(threads: int, n: int = 1024, repeats: int = 10) -> float:
    """Best fp32 FLOP/s of an n x n matmul at the current thread count."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def output_layer(model):
    """The LM head's weight, or None for a model without one (a reward model)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return None if head is None else head.weight


def body_matmul_params(model) -> int:
    """Weights used in matmuls below the output layer: every 2-D parameter except lookups.

    Embedding tables (tokens, positions) are lookups. GPT-2 ties its token
    table to the LM head: there it is a matmul, counted once, as `head_params`.
    """
    import torch

    lookups = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    head = output_layer(model)
    return sum(
        p.numel()
        for p in model.parameters()
        if p.dim() == 2 and id(p) not in lookups and p is not head
    )


def head_params(model) -> int:
    head = output_layer(model)
    return 0 if head is None else head.numel()


def step_flops(model, real_tokens: int, width: int, head_positions: int) -> float:
    """Model FLOPs of one training step (forward and backward)."""
    cfg = model.config
    per_token = 6 * body_matmul_params(model) + 12 * cfg.n_layer * width * cfg.n_embd
    return real_tokens * per_token + head_positions * 6 * head_params(model)


def time_steps(step, batches, warmup: int = 2) -> tuple[float, float, float]:
    """(seconds, real tokens, model FLOPs) of `step` over `batches` after a warm-up."""
    start = time.perf_counter()
    for batch in batches[:warmup]:
        step(batch)
    step.warmup_seconds = time.perf_counter() - start
    seconds = tokens = flops = 0.0
    for batch in batches[warmup:]:
        start = time.perf_counter()
        n_tokens, n_flops = step(batch)
        seconds += time.perf_counter() - start
        tokens += n_tokens
        flops += n_flops
    return seconds, tokens, flops


def sft_batches(tokenizer, rows, batch_size: int, count: int, max_len: int):
    from instructflow.models.batching import collate_sft, encode_pair, length_bucketed_batches

    examples = [encode_pair(tokenizer, r["prompt"], r["response"], max_len) for r in rows]
    lengths = [len(ids) for ids, _ in examples]
    order = length_bucketed_batches(lengths, batch_size, seed=0)[:count]
    return [collate_sft([examples[i] for i in b], tokenizer.pad_token_id) for b in order]


def bench_sft(ckpt, steps: int, compiled: bool = False) -> dict:
    import torch

    from bench.matmul_ceiling import ceiling
    from instructflow.models.lm import context_length, load_causal_lm
    from instructflow.models.lm_training import sft_loss_sum
    from instructflow.models.runtime import adamw, compiled_trunk
    from instructflow.tasks.tables import read_jsonl
    from instructflow.world import layout

    model, tokenizer = load_causal_lm(ckpt.sft)
    model.train()
    optimizer = adamw(model.parameters(), lr=1e-5, weight_decay=0.01, betas=(0.9, 0.95))
    rows = read_jsonl(ckpt.profile_dir / layout.SFT_TRAIN)
    batches = sft_batches(tokenizer, rows, 16, steps + 2, context_length(model))

    def step(batch):
        total, labelled = sft_loss_sum(model, batch)
        (total / max(1, labelled)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        real = int(batch["attention_mask"].sum())
        return real, step_flops(model, real, batch["input_ids"].shape[1], labelled)

    with compiled_trunk(model, compiled):
        seconds, tokens, flops = time_steps(step, batches)
    padded = sum(b["input_ids"].numel() for b in batches[2:])
    return {"tokens_per_s": tokens / seconds, "flops_per_s": flops / seconds,
            "padding_fraction": 1 - tokens / padded, "steps": len(batches) - 2, "batch": 16,
            "params_in_matmuls": body_matmul_params(model) + head_params(model),
            "warmup_seconds": step.warmup_seconds,
            **({} if compiled else {"matmuls_alone": ceiling(step, batches[2:])})}  # fmt: skip


def demo_rankings(ckpt, k: int = 6) -> list[dict]:
    """Comparison-shaped rows without sampling: each prompt with k demonstrations' responses.

    For an untrained checkpoint (no comparisons collected); the step's work
    depends on the lengths only, which are those of real responses.
    """
    from instructflow.tasks.tables import read_jsonl
    from instructflow.world import layout

    demos = read_jsonl(ckpt.profile_dir / layout.SFT_TRAIN)
    return [
        {
            "prompt": demos[i]["prompt"],
            "responses": [d["response"] for d in demos[i : i + k]],
            "ranking": list(range(k)),
        }
        for i in range(0, len(demos) - k, k)
    ]


def bench_rm(ckpt, steps: int, compiled: bool = False) -> dict:
    import torch

    from bench.matmul_ceiling import ceiling
    from instructflow.models.lm import context_length
    from instructflow.models.ranking_loss import kwise_ranking_loss
    from instructflow.models.reward_model import (
        encode_for_reward,
        reward_model_from_causal_lm,
        rewards,
    )
    from instructflow.models.runtime import adamw, compiled_trunk
    from instructflow.tasks.tables import read_jsonl

    model, tokenizer = reward_model_from_causal_lm(ckpt.sft)
    model.train()
    optimizer = adamw(model.parameters(), lr=1e-5, weight_decay=0.01, betas=(0.9, 0.95))
    comparisons = ckpt.rm.parent.parent / "comparisons" / "train.jsonl"
    rows = read_jsonl(comparisons) if comparisons.exists() else demo_rankings(ckpt)
    batch_rows = 16
    batches = [rows[i : i + batch_rows] for i in range(0, (steps + 2) * batch_rows, batch_rows)]
    max_len = context_length(model)

    def step(batch):
        k = len(batch[0]["responses"])
        prompts = [r["prompt"] for r in batch for _ in range(k)]
        responses = [x for r in batch for x in r["responses"]]
        ids, mask = encode_for_reward(tokenizer, prompts, responses, max_len)
        scores = rewards(model, ids, mask).view(len(batch), k)
        loss = kwise_ranking_loss(scores, torch.tensor([r["ranking"] for r in batch]))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        real = int(mask.sum())
        step.padded += ids.numel()
        return real, step_flops(model, real, ids.shape[1], head_positions=0)

    step.padded = 0
    with compiled_trunk(model, compiled):
        seconds, tokens, flops = time_steps(step, batches)
    return {"tokens_per_s": tokens / seconds, "flops_per_s": flops / seconds,
            "steps": len(batches) - 2, "prompts_per_step": batch_rows,
            "params_in_matmuls": body_matmul_params(model),
            "warmup_seconds": step.warmup_seconds,
            **({} if compiled else {"matmuls_alone": ceiling(step, batches[2:])})}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--checkpoint", choices=["trained", "untrained"], default="trained")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from bench import checkpoint, readme
    from bench.matmul_ceiling import add_fractions

    ckpt = checkpoint.build() if args.checkpoint == "trained" else checkpoint.untrained()
    loads = [os.getloadavg()[0]]
    peaks = [matmul_peak(args.threads)]
    sft = bench_sft(ckpt, args.steps)
    peaks.append(matmul_peak(args.threads))
    rm = bench_rm(ckpt, args.steps)
    peaks.append(matmul_peak(args.threads))
    compiled = {"sft": bench_sft(ckpt, args.steps, compiled=True)}
    peaks.append(matmul_peak(args.threads))
    compiled["reward_model"] = bench_rm(ckpt, args.steps, compiled=True)
    peaks.append(matmul_peak(args.threads))
    loads.append(os.getloadavg()[0])
    peak = max(peaks)
    for stage in (sft, rm, *compiled.values()):
        stage["mfu"] = stage["flops_per_s"] / peak
    for stage in (sft, rm):
        add_fractions(stage, peak)
    result = {
        "machine": f"{readme.cpu_model()}, {os.cpu_count()} cores;"
        f" 1-min load average {min(loads):.1f}-{max(loads):.1f}",
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "command": " ".join(["mfu.py", *sys.argv[1:]]),
        "threads": args.threads,
        "checkpoint": args.checkpoint,
        "matmul_peak_flops_per_s": peak,
        "matmul_peak_samples": peaks,
        "matmul_peak_spread": statistics.pstdev(peaks) / peak,
        "sft": sft,
        "reward_model": rm,
        "torch_compile": compiled,
    }
    print(json.dumps(result, indent=1))
    readme.save(result, args.out, DEFAULT_OUT)


if __name__ == "__main__":
    main()
