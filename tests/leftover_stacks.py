"""Serve stacks (scripts/serve.sh run by tests/live_stack.py's served_stack) that a killed pytest
left running, stopped by a later pytest session.

served_stack stops its stack in a `finally`, which a pytest killed with SIGKILL (a CI
timeout, the OOM killer, a second Ctrl-C's kill) never ran: its Prefect server, MLflow server
and worker ran on, each in a session of its own, holding ports, memory and CPU on a shared
machine. So served_stack records each stack here before serve.sh runs: a file naming the stack's
.serve/ folder, locked (flock) by the pytest process for as long as it lives; the kernel drops
the lock when the process dies, however it dies. Each session starts with a sweep: a record
whose lock is free belongs to a pytest that is gone, and the processes its .serve/*.pid files
name are stopped by PID, each only while it is still the process serve.sh started (its command
line is that service's, as scripts/stop.sh checks). Nothing else is killed.
"""

import contextlib
import fcntl
import getpass
import json
import os
import signal
import tempfile
import time
import uuid
from pathlib import Path

from instructflow.tasks.served_stack import command_line

# What each of serve.sh's PID files must name (scripts/serve.sh's command_of).
SERVICES = {
    "prefect-server": "prefect server start",
    "mlflow": "mlflow server",
    "worker": "prefect worker start",
}
TERM_SECONDS = 10.0  # as stop.sh gives each service, before SIGKILL
_held: dict[Path, int] = {}  # record -> the open descriptor that holds its lock


def registry() -> Path:
    """Beside pytest's numbered base temps (pytest-of-<user>/), which a later session may
    delete: the records must outlive the session that wrote them."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    root = Path(os.environ.get("PYTEST_DEBUG_TEMPROOT") or tempfile.gettempdir())
    return root / f"pytest-of-{user}" / "instructflow-live-stacks"


def record(state_dir: Path, folder: Path | None = None) -> Path:
    """Note that this process starts a stack whose PID files go to `state_dir`; locked while
    this process lives."""
    folder = folder or registry()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}.json"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)  # not inherited by serve.sh's processes
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, json.dumps({"state_dir": str(state_dir), "pytest_pid": os.getpid()}).encode())
    _held[path] = fd
    return path


def forget(path: Path) -> None:
    """The stack was stopped (scripts/stop.sh and by PID): nothing to sweep."""
    fd = _held.pop(path, None)
    path.unlink(missing_ok=True)
    if fd is not None:
        os.close(fd)


def owner_gone(path: Path) -> bool:
    """Whether the pytest that wrote the record is gone (its lock is free)."""
    if path in _held:
        return False
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False  # another session swept it meanwhile
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def served_pids(state_dir: Path) -> dict[str, int]:
    """Service name -> the live process its PID file names, where it still runs that service."""
    found = {}
    for name, command in SERVICES.items():
        try:
            pid = int((state_dir / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            continue
        if command in command_line(pid):
            found[name] = pid
    return found


def stop_group(pid: int) -> None:
    """SIGTERM the process group serve.sh started `pid` as the leader of, then SIGKILL."""
    group = pid if os.getpgid(pid) == pid else None  # a reused PID alone is never a group
    send = (lambda sig: os.killpg(group, sig)) if group else (lambda sig: os.kill(pid, sig))
    send(signal.SIGTERM)
    deadline = time.monotonic() + TERM_SECONDS
    while time.monotonic() < deadline:
        try:
            send(0)  # a process of the group is still there
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        send(signal.SIGKILL)


def sweep(folder: Path | None = None) -> list[str]:
    """Stop what stacks of pytest sessions that are gone left running; a line for each."""
    folder = folder or registry()
    stopped = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if not owner_gone(path):
            continue
        try:
            state_dir = Path(json.loads(path.read_text())["state_dir"])
        except (OSError, ValueError, KeyError):
            state_dir = None
        for name, pid in (served_pids(state_dir) if state_dir else {}).items():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                stop_group(pid)
                stopped.append(f"stopped {name} (pid {pid}) a killed pytest left in {state_dir}")
        path.unlink(missing_ok=True)
    return stopped
