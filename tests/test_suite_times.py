"""tests/suite_times.py: the per-phase lines it writes and its per-file sums."""

from types import SimpleNamespace

from tests import suite_times

LINES = [
    # ended, worker, phase, wall, outcome, test, own CPU, children's CPU
    ("1.0", "gw0", "setup", "10.00", "passed", "tests/a.py::test_one", "2.00", "7.50"),
    ("2.0", "gw0", "call", "1.50", "passed", "tests/a.py::test_one", "1.25", "0.00"),
    ("3.0", "gw1", "call", "4.00", "failed", "tests/b.py::test_two[x]", "0.50", "3.00"),
    ("4.0", "gw0", "teardown", "0.25", "passed", "tests/a.py::test_three", "0.25", "0.00"),
]


def write(folder, lines):
    for worker in {line[1] for line in lines}:
        rows = ["\t".join(line) for line in lines if line[1] == worker]
        (folder / f"{worker}.tsv").write_text("\n".join(rows) + "\n")


def test_sums_per_file_and_per_worker_are_the_phases_added_up(tmp_path):
    write(tmp_path, LINES)
    rows = suite_times.read_rows(tmp_path)
    assert suite_times.per_file(rows) == {
        "tests/a.py": {"wall_s": 11.75, "own_cpu_s": 3.5, "children_cpu_s": 7.5},
        "tests/b.py": {"wall_s": 4.0, "own_cpu_s": 0.5, "children_cpu_s": 3.0},
    }
    assert suite_times.per_worker(rows) == {"gw0": 11.75, "gw1": 4.0}
    text = suite_times.summary(rows, top=1)
    assert text.splitlines()[0] == (
        "2 files: wall 16 s, own CPU 4 s, children's CPU 10 s; in tests: gw0 12 s, gw1 4 s"
    )
    assert text.splitlines()[-1].split() == ["11.8", "3.5", "7.5", "tests/a.py"]


def test_a_phase_line_holds_its_cpu_since_the_phase_before(tmp_path, monkeypatch):
    clock = iter([(10.0, 100.0), (10.0, 100.0), (12.5, 104.0), (13.0, 104.0)])
    monkeypatch.setattr(suite_times, "cpu_seconds", lambda: next(clock))
    plugin = suite_times.SuiteTimes(tmp_path / "times", "gw3")
    plugin.pytest_runtest_setup(item=None)
    for when, seconds in (("setup", 3.0), ("call", 0.5)):
        report = SimpleNamespace(when=when, duration=seconds, outcome="passed", nodeid="t.py::x")
        plugin.pytest_runtest_logreport(report)
    rows = suite_times.read_rows(tmp_path / "times")
    assert [(r["phase"], r["wall_s"], r["own_cpu_s"], r["children_cpu_s"]) for r in rows] == [
        ("setup", "3.00", "2.50", "4.00"),
        ("call", "0.50", "0.50", "0.00"),
    ]
    assert {r["worker"] for r in rows} == {"gw3"}
