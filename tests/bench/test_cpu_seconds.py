"""bench/cpu_seconds.py: CPU seconds of this process and of a Prefect server it started."""

import subprocess
import sys
import time

import psutil

from bench import cpu_seconds

# A child that spins `busy` CPU seconds, says so, then waits to be killed (still readable).
BUSY = (
    "import time\nend = time.process_time() + {busy}\nwhile time.process_time() < end: pass\n"
    "print('spun', flush=True)\ntime.sleep(60)\n"
)


def spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_this_process_counts_its_own_busy_time():
    before = cpu_seconds.reading()
    spin(0.3)
    spent = cpu_seconds.spent(before, cpu_seconds.reading())
    assert 0.25 <= spent["this_process"] < 1.0


def test_only_children_running_uvicorn_count_as_the_prefect_server():
    # argv carries the word the server's command line has; the other child is any process
    piped = {"stdout": subprocess.PIPE, "text": True}
    before = cpu_seconds.reading()  # no server yet: all the server's CPU counts
    server = subprocess.Popen([sys.executable, "-c", BUSY.format(busy=0.4), "uvicorn"], **piped)
    other = subprocess.Popen([sys.executable, "-c", BUSY.format(busy=0.4)], **piped)
    try:
        found = [p.pid for p in cpu_seconds.prefect_servers()]  # with a test's real one, if any
        assert server.pid in found and other.pid not in found
        assert server.stdout.readline() == other.stdout.readline() == "spun\n"
        spent = cpu_seconds.spent(before, cpu_seconds.reading())
    finally:
        for child in (server, other):
            child.kill()
            child.wait(10)
    assert 0.4 <= spent["prefect_server"] <= 1.5  # 0.4 s spun, its start-up, a real one idling
    assert spent["this_process"] < 0.2


def test_summary_gives_each_side_and_process_its_spread_over_rounds():
    rounds = [
        {"direct": {"this_process": 20.0, "prefect_server": 0.2}, "orchestrated": {"this_process": 21.0, "prefect_server": 0.7}},
        {"direct": {"this_process": 22.0, "prefect_server": 0.3}, "orchestrated": {"this_process": 23.0, "prefect_server": 0.5}},
        {"direct": {"this_process": 21.0, "prefect_server": 0.1}, "orchestrated": {"this_process": 22.0, "prefect_server": 0.6}},
    ]  # fmt: skip

    def spread(values):
        return {"median": sorted(values)[1], "min": min(values), "max": max(values)}

    summary = cpu_seconds.summary(rounds, spread)
    assert summary["direct"]["this_process"] == {"median": 21.0, "min": 20.0, "max": 22.0}
    assert summary["orchestrated"]["prefect_server"] == {"median": 0.6, "min": 0.5, "max": 0.7}
    assert "orchestrated 22.00" in cpu_seconds.line(summary)


def test_a_child_that_exited_unreaped_is_no_server_and_no_error():
    # given a child that has exited and is not yet waited for (a zombie: psutil cannot read
    # its command line), as another test's leftover child can be
    zombie = subprocess.Popen([sys.executable, "-c", "pass", "uvicorn"])
    try:
        deadline = time.monotonic() + 10
        while psutil.Process(zombie.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # then reading and listing skip it
        assert zombie.pid not in [p.pid for p in cpu_seconds.prefect_servers()]
        assert cpu_seconds.reading()["this_process"] > 0
    finally:
        zombie.wait(10)
