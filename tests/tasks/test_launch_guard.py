"""A stage's launched processes end when the run's process is killed outright (kill -9).

They run in a session of their own, so nothing else ends them: under
`--processes 2` Accelerate's launcher and both workers went on for minutes
after a kill -9 of the run (a new user's trial). tasks/launch_guard.py has
the kernel send the launcher SIGTERM when its parent dies.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from instructflow.tasks import launch_guard

ROOT = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its exit status waits to be read


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    return [p for p in pids if _alive(p)]


def _processes_naming(text: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace"):
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not launch_guard.die_with_parent(0), reason="needs Linux's prctl")
def test_a_guarded_command_ends_when_its_parent_is_killed(tmp_path):
    # given a parent that starts a guarded sleeper in a session of its own
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-m', 'instructflow.tasks.launch_guard',"
            " str(os.getpid()), sys.executable, '-c', 'import time; time.sleep(60)'],"
            " start_new_session=True)\n"
            "print(child.pid, flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    child = int(parent.stdout.readline())
    assert _alive(child)
    # when the parent is killed outright
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    # then the sleeper ends too
    assert _wait_gone([child], 10) == []


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_a_killed_run_leaves_no_launcher_or_worker_of_a_two_process_stage(tmp_path):
    # given a run's process inside a 2-process stage that sleeps
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from instructflow.tasks import launch\n"
        "from tests.tasks import dist_targets\n"
        "launch.run(dist_targets.sleep_a_minute, {}, processes=2, work_dir=Path(sys.argv[1]),"
        " log=None, log_prefix=None)\n"
    )
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    run = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], env=env, cwd=ROOT)
    spec = str(tmp_path / "launch" / "spec.pkl")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_processes_naming(spec)) < 3:
        time.sleep(0.5)
    started = _processes_naming(spec)
    assert len(started) >= 3, started  # the launcher and its two workers
    # when the run's process is killed outright
    run.send_signal(signal.SIGKILL)
    run.wait()
    # then the launcher and the workers end within seconds
    assert _wait_gone(started, 30) == []
