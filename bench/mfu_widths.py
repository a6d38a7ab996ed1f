"""MFU of the SFT and RM training steps of bench/mfu.py at widths above the demo's.

    .venv/bin/python bench/mfu_widths.py [--widths 128 256 512 768] [--steps 8] [--threads 1]

The tiny demo's model is 128 wide: each matmul is small, so the steps' other
work (activations, attention, layer norms, the optimizer, Python's dispatch
of some hundred ops per step) weighs as much as the matmuls. A user's model
is wider. This bench runs the same steps (bench/mfu.py's `bench_sft` and
`bench_rm`: the stages' own functions, the same FLOP count) on untrained
GPT-2s of the tiny profile's depth (4 blocks), tokenizer and data, 32 dims
per head, at each width, against a matmul peak measured before and after
each width in the same process. It says at which width the step reaches
the issue's MFU target; it does not replace bench/mfu.py's figure for the
demo's own trained checkpoint. Writes bench/results/mfu_widths.json.
"""

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "mfu_widths.json"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HEAD_DIM = 32  # the tiny profile's (128 wide, 4 heads)


def one_width(width: int, steps: int, threads: int) -> dict:
    from bench import checkpoint
    from bench.mfu import bench_rm, bench_sft, matmul_peak
    from instructflow.models.lm import GPT2Size

    size = GPT2Size(n_embd=width, n_head=max(1, width // HEAD_DIM))
    ckpt = checkpoint.untrained(size=size)
    peaks = [matmul_peak(threads)]
    sft = bench_sft(ckpt, steps)
    peaks.append(matmul_peak(threads))
    rm = bench_rm(ckpt, steps)
    peaks.append(matmul_peak(threads))
    peak = max(peaks)
    return {
        "width": width,
        "n_layer": size.n_layer,
        "n_head": size.n_head,
        "matmul_peak_flops_per_s": peak,
        "sft": {"tokens_per_s": sft["tokens_per_s"], "mfu": sft["flops_per_s"] / peak,
                "params_in_matmuls": sft["params_in_matmuls"]},
        "reward_model": {"tokens_per_s": rm["tokens_per_s"], "mfu": rm["flops_per_s"] / peak},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 256, 512, 768])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from bench import readme

    loads = [os.getloadavg()[0]]
    rows = []
    for width in args.widths:
        row = one_width(width, args.steps, args.threads)
        rows.append(row)
        print(
            f"width {width:4d}: SFT MFU {row['sft']['mfu']:.2f}"
            f" ({row['sft']['tokens_per_s']:.0f} tokens/s), RM MFU"
            f" {row['reward_model']['mfu']:.2f} ({row['reward_model']['tokens_per_s']:.0f}"
            f" tokens/s), peak {row['matmul_peak_flops_per_s'] / 1e9:.0f} GFLOP/s",
            flush=True,
        )
    loads.append(os.getloadavg()[0])
    result = {
        "machine": f"{readme.cpu_model()}, {os.cpu_count()} cores;"
        f" 1-min load average {min(loads):.1f}-{max(loads):.1f}",
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "command": " ".join(["mfu_widths.py", *sys.argv[1:]]),
        "threads": args.threads,
        "steps": args.steps,
        "checkpoint": "untrained",
        "widths": rows,
    }

    readme.save(result, args.out, DEFAULT_OUT)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
