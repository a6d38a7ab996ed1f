"""README's measured figures and their sources (issue 22 item 9): bench/readme.py."""

import json
import re
import shutil
from pathlib import Path

from bench import readme

REPO_ROOT = Path(__file__).resolve().parents[2]
# Blocks other scripts write (scripts/claims.py: the sweep's), checked by their own tests.
GENERATED = re.compile(r"<!-- (\S+):begin -->.*?<!-- \1:end -->", re.S)
MINUTES = re.compile(r"(\d+(?:\.\d+)?)\s*(?:min|minutes)\b|\ba minute\b")


def test_readme_table_is_what_the_bench_results_render_to():
    text = (REPO_ROOT / "README.md").read_text()
    assert readme.block(text) == readme.render(), "run: python bench/readme.py"


def test_a_changed_result_changes_the_table(tmp_path):
    # given the results with one figure changed, as a new bench run would write them
    results = shutil.copytree(REPO_ROOT / "bench" / "results", tmp_path / "results")
    mfu = json.loads((results / "mfu.json").read_text())
    mfu["sft"]["tokens_per_s"] = 987.4
    (results / "mfu.json").write_text(json.dumps(mfu))
    # then the table renders the new figure, and no longer matches README's
    assert "987 tokens/s" in readme.render(results)
    assert readme.render(results) != readme.block((REPO_ROOT / "README.md").read_text())
    # and update() rewrites a README's block to it, leaving the rest alone
    copy = tmp_path / "README.md"
    copy.write_text(f"before\n{readme.BEGIN}\nold\n{readme.END}\nafter\n")
    assert readme.update(copy, results)
    assert (
        copy.read_text() == f"before\n{readme.BEGIN}\n{readme.render(results)}{readme.END}\nafter\n"
    )


def _write(folder: Path, name: str, data: dict) -> None:
    (folder / name).write_text(json.dumps(data))


def test_each_cell_from_its_field(tmp_path):
    # given one file per bench with round numbers, worked out by hand below
    ratio = {"median": 0.5, "min": 0.4, "max": 0.6}
    one = {"median": 0.9, "min": 0.9, "max": 0.9}
    gold = {"instructflow": {"mean": 0.0123}, "trl": {"mean": 0.0456}}
    eps = {"instructflow": {"median": 1.0}, "trl": {"median": 2.0}}
    threads = {"peak_rss_ratio": one, "gold_after_equal_episodes": gold, "episodes_per_s": eps}
    _write(tmp_path, "vs_trl.json", {
        "machine": "m1", "date": "2026-01-02", "checkpoint": "trained",
        "settings": {"rounds": 3, "iterations": 10},
        "threads": {"1": threads | {"episodes_per_s_ratio": ratio}},
    })  # fmt: skip
    _write(tmp_path, "mfu.json", {
        "machine": "m2", "threads": 1, "checkpoint": "trained", "matmul_peak_flops_per_s": 2e9,
        "sft": {"tokens_per_s": 150.6, "mfu": 0.456, "steps": 20},
        "reward_model": {"tokens_per_s": 99.4, "mfu": 0.304},
        "torch_compile": {
            "sft": {"tokens_per_s": 180.4, "mfu": 0.546, "warmup_seconds": 31.2},
            "reward_model": {"tokens_per_s": 120.6, "mfu": 0.367, "warmup_seconds": 8.6},
        },
    })  # fmt: skip
    width = {"n_layer": 4, "reward_model": {"mfu": 0.333}}
    _write(tmp_path, "mfu_widths.json", {
        "machine": "m4", "threads": 1, "command": "mfu_widths.py --widths 128 768",
        "widths": [width | {"width": 128, "sft": {"mfu": 0.351}},
                   width | {"width": 768, "sft": {"mfu": 0.5}}],
    })  # fmt: skip
    _write(tmp_path, "overhead.json", {
        "machine": "m3", "profile": "smoke", "threads": 2,
        "overhead_fraction": {"median": 0.0312, "min": 0.0251, "max": 0.04},
        "orchestrated_seconds": {"median": 80.4}, "rerun_seconds": {"median": 1.69},
        "rerun_fraction": {"median": 0.021, "min": 0.02, "max": 0.0333},
        "direct_seconds": {"median": 77.9},
        "rounds": [{"overhead_fraction": f} for f in (0.04, 0.0251, 0.0312)],
    })  # fmt: skip
    _write(tmp_path, "by_hand.json", {"times": {"make_test": {
        "what": "suite", "minutes": 14, "machine": "2 cores", "command": "make test",
        "date": "2026-01-03", "recorded_in": "commit abc",
    }}})  # fmt: skip
    text = readme.render(tmp_path)
    # then each figure is its field, rounded as the table rounds
    assert (
        "| PPO episodes/s, instructflow / TRL, 1 thread | 0.50 [0.40, 0.60] (instructflow 1.00, TRL 2.00 episodes/s) | >= 1.5 | `vs_trl.py --checkpoint trained --iterations 10` (3 rounds completed) |"
        in text
    )
    assert "| peak RSS, instructflow / TRL | 0.90 (1 thread) | - | same |" in text
    assert "instructflow 0.012, TRL 0.046 (1 thread) | within TRL's CI" in text
    assert "151 tokens/s, MFU 0.46 of a 2.00 GFLOP/s matmul peak" in text
    assert "99 tokens/s, MFU 0.30" in text
    assert (
        "| SFT training step with `torch_compile`, 1 thread | 180 tokens/s, MFU 0.55"
        " (after 31 s of compiling and warm-up) | MFU >= 0.40 | same |" in text
    )
    assert (
        "| RM training step with `torch_compile`, 1 thread | 121 tokens/s, MFU 0.37 (after 9 s"
        in text
    )
    assert (
        "| SFT / RM step MFU by width, untrained 4-block GPT-2, 1 thread | width 128: 0.35 / 0.33,"
        " 768: 0.50 / 0.33 | MFU >= 0.40 (the demo is 128 wide) | `mfu_widths.py --widths 128 768` |"
        in text
    )
    assert (
        # (a resample of 3 rounds has its median at the smallest with P = 7/27 > 0.025: so the
        # 2.5th percentile is the smallest round, the 97.5th the largest)
        "| orchestration + tracking overhead, smoke | 3.1% [2.5, 4.0] of 80 s; 95% CI of the median 2.5 to 4.0% | <= 5% | `overhead.py --profile smoke --threads 2` (median [range] of 3 rounds) |"
        in text
    )
    assert "| unchanged re-run / first run, smoke | 2.1% [2.0, 3.3] (1.7 s) |" in text
    assert (
        "| smoke flow run (server start excluded) | 80 s orchestrated, 78 s as plain functions | <= 60 s |"
        in text
    )
    assert (
        "| suite | 14 min, 2 cores | <= 15 min | `make test`, by hand, 2026-01-03 (commit abc) |"
        in text
    )
    assert (
        "- `vs_trl.json`: m1; 2026-01-02" in text and "- `mfu.json`: m2; date not recorded" in text
    )


def test_a_missing_overhead_file_says_not_measured(tmp_path):
    text = readme.render(tmp_path)
    assert text.count("not measured (no overhead.json)") == 3


def test_times_outside_the_generated_tables_are_the_recorded_ones():
    # a duration written by hand elsewhere in README, docs/ or the Makefile must be one that
    # bench/results/by_hand.json records (with its command and date)
    times = json.loads((REPO_ROOT / "bench" / "results" / "by_hand.json").read_text())["times"]
    recorded = {
        str(entry[key]) for entry in times.values() for key in entry if key.startswith("minutes")
    }
    pages = [
        "README.md",
        "Makefile",
        *(f"docs/{p.name}" for p in (REPO_ROOT / "docs").glob("*.md")),
    ]
    for name in pages:
        prose = GENERATED.sub("", (REPO_ROOT / name).read_text())
        for match in MINUTES.finditer(prose):
            assert match.group(1) in recorded, f"{name}: {match.group(0)!r} has no source"
