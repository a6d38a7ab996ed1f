"""Recompute a finished sweep's aggregate from its children's reports, with this checkout's code.

    python scripts/sweep_aggregate.py reports/sweeps/<run id>/aggregate.json -o OUT.json

Run it in the project root the sweep ran in: the children's reports
(reports/<child run id>/report.json) and evaluation outputs (runs/evaluation/)
are read from there. For a figure the aggregation learned to keep after the
sweep ran (e.g. the held-out judge's win rate): `policies`, `reward_model` and
`world` are recomputed (instructflow.tasks.sweep_stats, .sweep_world); what
needed the models (`gate_noise`), the provenance and the sweep's run ids are
kept as they were, and `reaggregated` records the commit that recomputed it.
It prints how many of the figures the sweep itself computed came out the same
(all of them, unless the aggregation code changed what it computes).
"""

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from instructflow.flows.sweep import per_prompt_from  # noqa: E402
from instructflow.tasks import sweep_stats, sweep_world, tracking  # noqa: E402
from instructflow.tasks.paths import reports_dir  # noqa: E402
from instructflow.tasks.report_figures import leaves  # noqa: E402


def reaggregate(old: dict) -> dict:
    """`old` with its seed figures recomputed from the children's reports."""
    children = old["sweep"]["child_runs"]  # seed -> the child's MLflow run id
    reports = {
        int(seed): json.loads((reports_dir() / run_id / "report.json").read_text())
        for seed, run_id in children.items()
    }
    fresh = sweep_stats.aggregate(reports, {s: per_prompt_from(r) for s, r in reports.items()})
    fresh["world"] = sweep_world.world_figures(reports)
    stamp = {
        "git_commit": tracking.git_commit(),
        "utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "recomputed": ["seeds", "policies", "reward_model", "world"],
    }
    return old | fresh | {"reaggregated": stamp}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("aggregate", type=Path, help="the sweep's aggregate.json")
    parser.add_argument("-o", "--out", type=Path, required=True, help="where to write the result")
    args = parser.parse_args(argv)
    old = json.loads(args.aggregate.read_text())
    new = json.loads(json.dumps(reaggregate(old)))  # as JSON keeps it: lists, not tuples
    before = {
        k: v for k, v in leaves(old).items() if k.split("/")[0] in new["reaggregated"]["recomputed"]
    }
    after = leaves(new)
    same = sum(after.get(k) == v for k, v in before.items())
    added = sorted(set(after) - set(leaves(old)))
    print(f"{same}/{len(before)} figures of the sweep recomputed the same; {len(added)} added")
    for key in sorted(k for k, v in before.items() if after.get(k) != v):
        print(f"  changed: {key}: {before[key]} -> {after.get(key)}")
    args.out.write_text(json.dumps(new, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
