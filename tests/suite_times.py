"""Where the suite's time goes: each test phase's wall time and CPU time.

    INSTRUCTFLOW_SUITE_TIMES=/tmp/suite-times make test
    .venv/bin/python -m tests.suite_times /tmp/suite-times [--top 30]

pytest's --durations gives wall time only. On a 2-core machine the wall time of an
end-to-end test is mostly the CPU of the processes it starts (a CLI run imports torch,
transformers, MLflow and Prefect: ~10 CPU-s before it trains), or waiting for the cores
the other worker holds. So each phase (setup, call, teardown; a module fixture's work is
in its first test's setup) also records the CPU seconds of the test process and of the
child processes it waited for (os.times), one tab-separated file per xdist worker; run as
a module, this sums them per test file, slowest first.
"""

import argparse
import csv
import os
import time
from collections import defaultdict
from pathlib import Path

COLUMNS = ("ended", "worker", "phase", "wall_s", "outcome", "test", "own_cpu_s", "children_cpu_s")
SUMMED = ("wall_s", "own_cpu_s", "children_cpu_s")


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds of this process, and of the children it has waited for."""
    times = os.times()
    return times.user + times.system, times.children_user + times.children_system


class SuiteTimes:
    """A pytest plugin writing one line per test phase to FOLDER/<worker>.tsv."""

    def __init__(self, folder: Path, worker: str):
        folder.mkdir(parents=True, exist_ok=True)
        self.out = (folder / f"{worker}.tsv").open("a", buffering=1)
        self.worker = worker
        self.last = cpu_seconds()

    def pytest_runtest_setup(self, item) -> None:
        self.last = cpu_seconds()  # what ran between tests (collection, a file's end) is left out

    def pytest_runtest_logreport(self, report) -> None:
        own, children = cpu_seconds()
        fields = (
            f"{time.time():.2f}", self.worker, report.when, f"{report.duration:.2f}",
            report.outcome, report.nodeid,
            f"{own - self.last[0]:.2f}", f"{children - self.last[1]:.2f}",
        )  # fmt: skip
        self.last = (own, children)
        self.out.write("\t".join(fields) + "\n")


def register(config) -> None:
    """Add the plugin when INSTRUCTFLOW_SUITE_TIMES names a folder (conftest's pytest_configure)."""
    folder = os.environ.get("INSTRUCTFLOW_SUITE_TIMES")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    # Under xdist the controller hears every worker's reports too: only the workers write.
    if folder and (worker or not getattr(config.option, "numprocesses", None)):
        worker = worker or "main"
        config.pluginmanager.register(SuiteTimes(Path(folder), worker), "instructflow-suite-times")


def read_rows(folder: Path) -> list[dict]:
    rows = []
    for path in sorted(folder.glob("*.tsv")):
        with path.open(newline="") as lines:
            for line in csv.reader(lines, delimiter="\t"):
                rows.append(dict(zip(COLUMNS, line, strict=True)))
    return rows


def per_file(rows: list[dict]) -> dict[str, dict[str, float]]:
    """{test file: {"wall_s", "own_cpu_s", "children_cpu_s"}}, summed over its tests' phases."""
    sums: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(SUMMED, 0.0))
    for row in rows:
        file = row["test"].split("::", 1)[0]
        for column in SUMMED:
            sums[file][column] += float(row[column])
    return dict(sums)


def per_worker(rows: list[dict]) -> dict[str, float]:
    """{worker: seconds it spent in tests}."""
    busy: dict[str, float] = defaultdict(float)
    for row in rows:
        busy[row["worker"]] += float(row["wall_s"])
    return dict(busy)


def summary(rows: list[dict], top: int) -> str:
    files = per_file(rows)
    total = {column: sum(sums[column] for sums in files.values()) for column in SUMMED}
    busy = ", ".join(f"{worker} {s:.0f} s" for worker, s in sorted(per_worker(rows).items()))
    lines = [
        f"{len(files)} files: wall {total['wall_s']:.0f} s, own CPU {total['own_cpu_s']:.0f} s,"
        f" children's CPU {total['children_cpu_s']:.0f} s; in tests: {busy}",
        f"{'wall s':>8} {'own CPU':>8} {'children':>8}  file",
    ]
    ranked = sorted(files.items(), key=lambda item: -item[1]["wall_s"])
    for file, sums in ranked[:top]:
        lines.append(
            f"{sums['wall_s']:8.1f} {sums['own_cpu_s']:8.1f} {sums['children_cpu_s']:8.1f}  {file}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="Sum the suite's times per test file.")
    parser.add_argument("folder", type=Path, help="what INSTRUCTFLOW_SUITE_TIMES named")
    parser.add_argument("--top", type=int, default=30, help="how many files to list")
    args = parser.parse_args()
    print(summary(read_rows(args.folder), args.top))


if __name__ == "__main__":
    main()
