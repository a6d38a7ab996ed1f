"""README's table of measured figures, written from the files that hold them.

    python bench/readme.py            # rewrite the block in README.md
    python bench/readme.py --check    # exit 1 when README.md differs from what the files render to

Sources, all in bench/results/: vs_trl.json (bench/vs_trl.py), mfu.json
(bench/mfu.py), mfu_widths.json (bench/mfu_widths.py), overhead.json (bench/overhead.py; "not measured" while it is
absent), and by_hand.json: times measured by hand, each with its command,
date and where it was first recorded. The benches call `update()` after
writing their file, so a bench run rewrites the table; tests/bench/test_readme.py
fails when README.md and these files disagree.
"""

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
README = ROOT / "README.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
# The targets of the issues that asked for each figure (not measurements).
TARGETS = {
    "ratio_1": ">= 1.5",
    "ratio_2": ">= 2.0",
    "mfu": "MFU >= 0.40",
    "overhead": "<= 5%",
    "smoke": "<= 60 s",
    "smoke_demo": "<= 60 s",
    "tiny_demo": "<= 12 min",
    "make_test": "<= 15 min",
}


def cpu_model() -> str:
    """The CPU's model name (Linux), for the machine line of a result file: MFU is the step's
    FLOP/s over this CPU's matmul peak, and the same step at the same speed measured 0.33 of
    a 179-191 GFLOP/s peak one morning and 0.54 of a 110-116 one that night (one thread)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def save(result: dict, out: Path, default: Path) -> None:
    """Write a bench's result file; when it is the bench's own file under bench/results/,
    rewrite README's Performance table from it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    if out.resolve() == default.resolve():
        update()


def _load(results: Path, name: str) -> dict | None:
    path = results / name
    return json.loads(path.read_text()) if path.exists() else None


def _range(values: list[float], fmt: str = "{:.2f}") -> str:
    low, high = fmt.format(min(values)), fmt.format(max(values))
    return low if low == high else f"{low}-{high}"


def _stat(stat: dict) -> str:
    """A median with its range over rounds, when there was more than one value."""
    median = f"{stat['median']:.2f}"
    low, high = f"{stat['min']:.2f}", f"{stat['max']:.2f}"
    return median if low == high else f"{median} [{low}, {high}]"


def _threads(n: str) -> str:
    return f"{n} thread" + ("" if n == "1" else "s")


def _vs_trl_rows(data: dict) -> list[list[str]]:
    settings = data["settings"]
    rounds = settings["rounds"]
    command = data.get("command") or (
        f"vs_trl.py --checkpoint {data['checkpoint']} --iterations {settings['iterations']}"
    )
    source = f"`{command}` ({rounds} round{'' if rounds == 1 else 's'} completed)"
    rows = []
    for n, t in sorted(data["threads"].items()):
        eps = t["episodes_per_s"]
        rows.append(
            [
                f"PPO episodes/s, instructflow / TRL, {_threads(n)}",
                f"{_stat(t['episodes_per_s_ratio'])} (instructflow {eps['instructflow']['median']:.2f},"
                f" TRL {eps['trl']['median']:.2f} episodes/s)",
                TARGETS.get(f"ratio_{n}", "-"),
                source,
            ]
        )
    rss = ", ".join(
        f"{_stat(t['peak_rss_ratio'])} ({_threads(n)})" for n, t in sorted(data["threads"].items())
    )
    rows.append(["peak RSS, instructflow / TRL", rss, "-", "same"])
    gold = "; ".join(
        f"instructflow {t['gold_after_equal_episodes']['instructflow']['mean']:.3f},"
        f" TRL {t['gold_after_equal_episodes']['trl']['mean']:.3f} ({_threads(n)})"
        for n, t in sorted(data["threads"].items())
    )
    if data["checkpoint"] == "untrained":
        gold += " (untrained checkpoint: says nothing)"
    rows.append(["gold after equal episodes", gold, "within TRL's CI", "same"])
    return rows


def _mfu_rows(data: dict) -> list[list[str]]:
    peak = data["matmul_peak_flops_per_s"] / 1e9
    command = data.get("command") or (
        f"mfu.py --threads {data['threads']} --steps {data['sft']['steps']}"
        f" --checkpoint {data['checkpoint']}"
    )
    threads = _threads(str(data["threads"]))
    return [
        [
            f"SFT training step, {threads}",
            f"{data['sft']['tokens_per_s']:.0f} tokens/s, MFU {data['sft']['mfu']:.2f}"
            f" of a {peak:.2f} GFLOP/s matmul peak" + _matmuls_alone(data["sft"]),
            TARGETS["mfu"],
            f"`{command}`",
        ],
        [
            f"RM training step, {threads}",
            f"{data['reward_model']['tokens_per_s']:.0f} tokens/s,"
            f" MFU {data['reward_model']['mfu']:.2f}" + _matmuls_alone(data["reward_model"]),
            TARGETS["mfu"],
            "same",
        ],
        *_compiled_mfu_rows(data.get("torch_compile"), threads),
    ]


def _matmuls_alone(stage: dict) -> str:
    """What the step's own matmuls reach when replayed bare (bench/matmul_ceiling.py)."""
    alone = stage.get("matmuls_alone")
    if not alone:
        return ""
    return (
        f"; its matmuls alone, at their shapes: {alone['bare_fraction_of_peak']:.2f} of the"
        f" peak, in {alone['bare_fraction_of_step']:.2f} of the step's time"
    )


def _compiled_mfu_rows(compiled: dict | None, threads: str) -> list[list[str]]:
    """The same steps with `torch_compile: true`, measured beside them (mfu.json's torch_compile)."""
    if not compiled:
        return []
    return [
        [
            f"{name} training step with `torch_compile`, {threads}",
            f"{compiled[key]['tokens_per_s']:.0f} tokens/s, MFU {compiled[key]['mfu']:.2f}"
            f" (after {compiled[key]['warmup_seconds']:.0f} s of compiling and warm-up)",
            TARGETS["mfu"],
            "same",
        ]
        for name, key in (("SFT", "sft"), ("RM", "reward_model"))
    ]


def _mfu_width_rows(data: dict) -> list[list[str]]:
    """One row: SFT / RM MFU at each width of bench/mfu_widths.py (untrained GPT-2s)."""
    cells = ", ".join(
        f"{w['width']}: {w['sft']['mfu']:.2f} / {w['reward_model']['mfu']:.2f}"
        for w in data["widths"]
    )
    depth = data["widths"][0]["n_layer"]
    return [
        [
            f"SFT / RM step MFU by width, untrained {depth}-block GPT-2, "
            + _threads(str(data["threads"])),
            f"width {cells}",
            TARGETS["mfu"] + " (the demo is 128 wide)",
            f"`{data['command']}`",
        ]
    ]


def median_ci95(values: list[float]) -> tuple[float, float]:
    """95% percentile-bootstrap CI of the median of `values` (an overhead bench's rounds, the
    unit that varies): how far the median itself may be from the host's true figure."""
    import numpy as np

    from instructflow.tasks.stats import bootstrap_ci

    return bootstrap_ci(values, n_resamples=4000, seed=0, statistic=np.median)


def _overhead_rows(data: dict | None) -> list[list[str]]:
    what = [
        ("orchestration + tracking overhead, smoke", "overhead"),
        ("unchanged re-run / first run, smoke", "overhead"),
        ("smoke flow run (server start excluded)", "smoke"),
    ]
    if data is None:
        return [
            [w, "not measured (no overhead.json)", TARGETS[t], "`overhead.py`"] for w, t in what
        ]
    command = data.get("command") or (
        f"overhead.py --profile {data['profile']} --threads {data['threads']}"
    )

    def percent(spread: dict) -> str:
        return (
            f"{100 * spread['median']:.1f}% [{100 * spread['min']:.1f}, {100 * spread['max']:.1f}]"
        )

    rounds = len(data["rounds"])
    # The run without its registry stage, which the plain functions do not have (older
    # files divided by the whole run).
    compared = data.get("compared_seconds", data["orchestrated_seconds"])
    low, high = median_ci95([r["overhead_fraction"] for r in data["rounds"]])
    measured = [
        f"{percent(data['overhead_fraction'])} of {compared['median']:.0f} s;"
        f" 95% CI of the median {100 * low:.1f} to {100 * high:.1f}%",
        f"{percent(data['rerun_fraction'])} ({data['rerun_seconds']['median']:.1f} s)",
        f"{data['orchestrated_seconds']['median']:.0f} s orchestrated,"
        f" {data['direct_seconds']['median']:.0f} s as plain functions",
    ]
    sources = [f"`{command}` (median [range] of {rounds} rounds)", "same", "same"]
    return [[w, m, TARGETS[t], s] for (w, t), m, s in zip(what, measured, sources, strict=True)]


def _by_hand_rows(data: dict) -> list[list[str]]:
    rows = []
    for key, entry in data["times"].items():
        measured = f"{entry['seconds']} s" if "seconds" in entry else f"{entry['minutes']} min"
        if "minutes_with_first_install" in entry:
            measured += f" ({entry['minutes_with_first_install']} with the first install)"
        measured += f", {entry['machine']}"
        source = f"`{entry['command']}`, by hand, {entry['date']} ({entry['recorded_in']})"
        if entry.get("note"):
            source += f"; {entry['note']}"
        rows.append([entry["what"], measured, TARGETS.get(key, "-"), source])
    return rows


def _machines(sources: dict[str, dict | None]) -> list[str]:
    lines = []
    for name, data in sources.items():
        if data is not None and "machine" in data:
            date = data.get("date", "date not recorded")
            lines.append(f"- `{name}`: {data['machine']}; {date}")
    return lines


def render(results: Path = RESULTS) -> str:
    """The block's text (between the markers) for the files in `results`."""
    vs_trl, mfu = _load(results, "vs_trl.json"), _load(results, "mfu.json")
    overhead, by_hand = _load(results, "overhead.json"), _load(results, "by_hand.json")
    widths = _load(results, "mfu_widths.json")
    rows = []
    if vs_trl:
        rows += _vs_trl_rows(vs_trl)
    if mfu:
        rows += _mfu_rows(mfu)
    if widths:
        rows += _mfu_width_rows(widths)
    rows += _overhead_rows(overhead)
    if by_hand:
        rows += _by_hand_rows(by_hand)
    table = ["| what | measured | target | source |", "| --- | --- | --- | --- |"]
    table += ["| " + " | ".join(row) + " |" for row in rows]
    machines = _machines(
        {
            "vs_trl.json": vs_trl,
            "mfu.json": mfu,
            "mfu_widths.json": widths,
            "overhead.json": overhead,
        }
    )
    return "\n".join(
        [
            "<!-- generated by bench/readme.py from bench/results/*.json; do not edit by hand -->",
            "",
            "Where each file was measured:",
            "",
            *machines,
            "",
            *table,
            "",
        ]
    )


def _span(text: str) -> tuple[int, int]:
    match = re.search(re.escape(BEGIN) + r"\n(.*?)" + re.escape(END), text, re.S)
    if match is None:
        raise ValueError(f"no {BEGIN} ... {END} block")
    return match.span(1)


def block(text: str) -> str:
    """The generated part of a README text (between the markers)."""
    start, end = _span(text)
    return text[start:end]


def update(readme: Path = README, results: Path = RESULTS) -> bool:
    """Rewrite the block of `readme` from `results`; True when it changed."""
    text = readme.read_text()
    start, end = _span(text)
    new = text[:start] + render(results) + text[end:]
    if new != text:
        readme.write_text(new)
    return new != text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only say whether README differs")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args()
    if args.check:
        same = block(args.readme.read_text()) == render()
        print("README's bench block matches bench/results" if same else "README differs")
        return 0 if same else 1
    print("rewrote" if update(args.readme) else "unchanged", args.readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
