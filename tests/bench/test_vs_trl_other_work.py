"""bench/vs_trl.py: the cores other work kept busy while a worker ran."""

import subprocess
import sys
import time

from bench import vs_trl


def burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_other_work_is_the_machines_busy_time_less_the_workers_over_the_wall(monkeypatch):
    # given a run of 2 s in which the machine was busy 3 CPU-s, 2 of them the worker's
    readings = {"busy": iter([100.0, 103.0]), "own": iter([10.0, 12.0]), "t": iter([5.0, 7.0])}
    monkeypatch.setattr(vs_trl, "busy_cpu_seconds", lambda: next(readings["busy"]))
    monkeypatch.setattr(vs_trl, "children_cpu_seconds", lambda: next(readings["own"]))
    monkeypatch.setattr(vs_trl.time, "perf_counter", lambda: next(readings["t"]))
    monkeypatch.setattr(vs_trl.subprocess, "run", lambda *a, **k: None)
    # then other work kept (3 - 2) / 2 = 0.5 cores busy
    assert vs_trl.run_worker(["worker"], {}) == 0.5


def test_busy_seconds_count_this_process_cpu():
    before = vs_trl.busy_cpu_seconds()
    burn(0.5)
    # other processes can only add to the machine's busy time
    assert vs_trl.busy_cpu_seconds() - before >= 0.45


def test_children_seconds_count_a_waited_for_child():
    before = vs_trl.children_cpu_seconds()
    code = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert vs_trl.children_cpu_seconds() - before >= 0.5
