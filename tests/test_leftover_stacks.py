"""A serve stack a killed pytest left running is stopped by the next session
(tests/leftover_stacks.py), and nothing but what a gone session recorded is."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests import leftover_stacks
from tests.conftest import REPO_ROOT


def _process(args: str | None = None) -> subprocess.Popen:
    """`sleep 300` in a session of its own, its command line `args` (a server's) if given."""
    exec_as = f'-a "{args}" ' if args else ""
    process = subprocess.Popen(["bash", "-c", f"exec {exec_as}sleep 300"], start_new_session=True)
    threading.Thread(target=process.wait, daemon=True).start()  # reaped once it ends
    return process


@pytest.fixture
def processes():
    started: list[subprocess.Popen] = []

    def start(args: str | None = None) -> subprocess.Popen:
        started.append(_process(args))
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()


def _serve_state(tmp_path: Path, **pids: int) -> Path:
    """A .serve/ folder whose PID files (prefect-server.pid, ...) name `pids`."""
    state = tmp_path / "checkout" / ".serve"
    state.mkdir(parents=True)
    for name, pid in pids.items():
        (state / f"{name.replace('_', '-')}.pid").write_text(str(pid))
    return state


def _recorded_by_a_gone_pytest(state: Path, registry: Path) -> Path:
    """Recorded as served_stack records it, by a process that then ended (as a killed pytest)."""
    code = "import sys; from pathlib import Path; from tests import leftover_stacks as l; "
    code += "print(l.record(Path(sys.argv[1]), Path(sys.argv[2])))"
    written = subprocess.run(
        [sys.executable, "-c", code, str(state), str(registry)],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return Path(written.stdout.strip())


def _ended(process: subprocess.Popen) -> bool:
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_a_stack_a_gone_pytest_recorded_is_stopped_by_the_sweep(tmp_path, processes):
    # given a Prefect server and a worker serve.sh started for a pytest that was killed since
    server = processes("prefect server start --host 127.0.0.1 --port 1")
    worker = processes("prefect worker start --pool instructflow-process")
    state = _serve_state(tmp_path, prefect_server=server.pid, worker=worker.pid)
    record = _recorded_by_a_gone_pytest(state, tmp_path / "registry")
    # when a later session sweeps
    said = leftover_stacks.sweep(tmp_path / "registry")
    # then both are stopped, said, and the record is gone
    assert _ended(server) and _ended(worker)
    assert f"stopped prefect-server (pid {server.pid}) a killed pytest left in {state}" in said
    assert len(said) == 2 and not record.exists()


def test_a_live_sessions_stack_and_a_reused_pid_are_left_alone(tmp_path, processes):
    registry = tmp_path / "registry"
    # given a stack this (live) session recorded
    server = processes("prefect server start --host 127.0.0.1 --port 1")
    mine = leftover_stacks.record(
        _serve_state(tmp_path / "mine", prefect_server=server.pid), registry
    )
    # and a gone session's PID file naming a process that is not its server (a reused PID)
    other = processes()
    _recorded_by_a_gone_pytest(_serve_state(tmp_path / "gone", mlflow=other.pid), registry)
    try:
        # when a sweep runs
        said = leftover_stacks.sweep(registry)
    finally:
        leftover_stacks.forget(mine)
    # then neither process was touched
    assert said == [] and server.poll() is None and other.poll() is None


def test_each_session_sweeps_as_it_starts(tmp_path, processes):
    # given a gone session's record, under the temporary root pytest's own base temp is in
    server = processes("mlflow server --host 127.0.0.1 --port 1")
    temp_root = tmp_path / "temp-root"
    env = os.environ | {"PYTEST_DEBUG_TEMPROOT": str(temp_root)}
    registry = Path(
        subprocess.run(
            [sys.executable, "-c", "from tests import leftover_stacks as l; print(l.registry())"],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    _recorded_by_a_gone_pytest(_serve_state(tmp_path, mlflow=server.pid), registry)
    # when a pytest session starts (it collects one file, runs nothing)
    session = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--co",
         "tests/test_leftover_stacks.py", "-k", "no_such_test"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    # then the leftover server is stopped, and the session says so
    assert _ended(server), session.stdout + session.stderr
    assert f"stopped mlflow (pid {server.pid})" in session.stdout


def test_served_stack_records_its_stack_while_serve_sh_runs_and_forgets_it_after(
    tmp_path, monkeypatch
):
    from tests import live_stack

    # given a checkout whose serve.sh copies the records it finds, then fails
    monkeypatch.setenv("PYTEST_DEBUG_TEMPROOT", str(tmp_path / "temp-root"))
    monkeypatch.setenv("LEFTOVER_REGISTRY", str(leftover_stacks.registry()))
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    (checkout / "scripts" / "serve.sh").write_text(
        'cat "$LEFTOVER_REGISTRY"/*.json > recorded.json; exit 1\n'
    )
    monkeypatch.setattr(live_stack, "copy_checkout", lambda dest: checkout)
    # when served_stack starts it (and stops it once serve.sh failed)
    with pytest.raises(AssertionError), live_stack.served_stack(tmp_path):
        pass
    # then serve.sh ran with the stack's .serve/ recorded, and the record is gone after
    assert str(checkout / ".serve") in (checkout / "recorded.json").read_text()
    assert list(leftover_stacks.registry().glob("*.json")) == []


def test_a_live_stack_whose_stop_script_times_out_is_still_stopped_by_pid(
    tmp_path, processes, monkeypatch
):
    from tests.live_stack import LiveStack

    # given a stack whose worker and servers run, and a stop.sh that never returns in time
    server, worker = processes(), processes()
    checkout = _serve_state(tmp_path, **{"prefect-server": server.pid, "worker": worker.pid}).parent
    real_run = subprocess.run

    def stop_script_times_out(args, **kwargs):
        if args[:2] == ["bash", "scripts/stop.sh"]:
            raise subprocess.TimeoutExpired(args, kwargs.get("timeout"))
        return real_run(args, **kwargs)

    monkeypatch.setattr(subprocess, "run", stop_script_times_out)
    # when the stack is stopped
    LiveStack(checkout, dict(os.environ), 1, 1).stop()
    # then every process it recorded is gone
    for process in (server, worker):
        assert process.wait(timeout=10) is not None
