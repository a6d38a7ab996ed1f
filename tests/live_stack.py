"""`make serve` for real in tests: a copy of the checkout, its stack on free loopback ports.

`served_stack(base)` runs scripts/serve.sh (Prefect server, worker, MLflow server)
in a fresh copy of the checkout and stops it (scripts/stop.sh, then by PID);
`LiveStack` is what a test drives it with (the Prefect API as the UI calls it, the
logs, the artifacts). tests/conftest.py's `live_stack` shares one per session.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import leftover_stacks

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def copy_checkout(dest: Path) -> Path:
    """A fresh clone of this checkout as it is now: the files git sees (tracked and not ignored), committed.

    No data/, runs/, mlflow store or .serve/: the pipeline regenerates data/ as
    on a fresh clone. .venv is linked, so the scripts find the same environment.
    """
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, listing.split("\0")):
        source = REPO_ROOT / rel
        if source.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / rel)
    # A git repository of its own, as a clone is (DVC wants one; git_commit reads it).
    git = [
        "git",
        "-c",
        "user.name=instructflow-tests",
        "-c",
        "user.email=tests@localhost",
        "-c",
        "commit.gpgsign=false",
    ]
    subprocess.run([*git, "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run(
        [*git, "commit", "-q", "-m", "snapshot of the checkout under test"], cwd=dest, check=True
    )
    (dest / ".git" / "info" / "exclude").write_text(".venv\n")
    (dest / ".venv").symlink_to(REPO_ROOT / ".venv")
    return dest


TERMINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


# Prefect answers 503 while its SQLite store is busy (SQLITE_BUSY: the worker and a
# finishing run write at the same moment) and 429 when it sheds load; both mean "ask
# again", and Prefect's own client retries them the same way. On two cores a training
# flow run can starve the server long enough for a read to time out (seen in CI): that
# is "ask again" too.
RETRYABLE = {429, 503}


def ask_prefect(client, method: str, path: str, attempts: int = 8, **kwargs):
    """One call to a Prefect API through an httpx client, asked again with a growing pause
    while the server is busy or slow."""
    import httpx

    pause = 0.5
    for _ in range(attempts - 1):
        try:
            response = client.request(method, path, **kwargs)
        except httpx.TimeoutException:
            response = None
        if response is not None and response.status_code not in RETRYABLE:
            return response
        time.sleep(pause)
        pause = min(pause * 2, 8.0)
    return client.request(method, path, **kwargs)


class LiveStack:
    """What scripts/serve.sh started in a copy of the checkout: Prefect server, worker, MLflow server."""

    def __init__(self, checkout: Path, env: dict[str, str], prefect_port: int, mlflow_port: int):
        import httpx

        self.checkout, self.env = checkout, env
        self.prefect_url = f"http://127.0.0.1:{prefect_port}"
        self.mlflow_url = f"http://127.0.0.1:{mlflow_port}"
        self.api = httpx.Client(base_url=f"{self.prefect_url}/api", timeout=60)
        self.serve_output = ""

    def request(self, method: str, path: str, attempts: int = 8, **kwargs):
        """One API call, asked again with a growing pause while the server is busy or slow."""
        return ask_prefect(self.api, method, path, attempts, **kwargs)

    def run_deployment(self, name: str, parameters: dict) -> str:
        """What the UI's Custom Run does: create a flow run of a deployment; return its id."""
        deployment = self.request("GET", f"/deployments/name/{name}")
        deployment.raise_for_status()
        created = self.request(
            "POST",
            f"/deployments/{deployment.json()['id']}/create_flow_run",
            json={"parameters": parameters},
        )
        created.raise_for_status()
        return created.json()["id"]

    def wait(self, flow_run_id: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            run = self.request("GET", f"/flow_runs/{flow_run_id}").json()
            if (run.get("state") or {}).get(
                "type"
            ) in TERMINAL_STATES or time.monotonic() > deadline:
                return run
            time.sleep(2)

    def logs(self, flow_run_id: str) -> str:
        """The flow run's log lines, and the end of the worker's log (for failure messages)."""
        found = self.request(
            "POST",
            "/logs/filter",
            json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200},
        )
        lines = [row["message"] for row in found.json()] if found.is_success else []
        worker_log = self.checkout / ".serve" / "worker.log"
        tail = worker_log.read_text(errors="replace")[-4000:] if worker_log.exists() else ""
        return "\n".join(lines[-60:]) + "\n--- worker.log ---\n" + tail

    def artifacts(self, flow_run_id: str, key: str) -> list[dict]:
        found = self.request(
            "POST",
            "/artifacts/filter",
            json={"artifacts": {"key": {"any_": [key]}, "flow_run_id": {"any_": [flow_run_id]}}},
        )
        found.raise_for_status()
        return found.json()

    def script(self, name: str) -> subprocess.CompletedProcess:
        """scripts/<name> (serve.sh, stop.sh) run in the stack's checkout, as make runs it."""
        return subprocess.run(
            ["bash", f"scripts/{name}"],
            cwd=self.checkout,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def stop(self) -> None:
        """scripts/stop.sh; then, whatever is left, by the PIDs in .serve/."""
        state = self.checkout / ".serve"
        pids = {f.name: f.read_text().strip() for f in state.glob("*.pid")}
        # Minutes, not seconds: stop.sh first waits for flow runs in progress to end
        # (flows/stop_runs.py), then gives each service 10 s.
        try:
            stopped = subprocess.run(
                ["bash", "scripts/stop.sh"], cwd=self.checkout, env=self.env, timeout=300
            ).returncode
        except subprocess.TimeoutExpired:  # the by-PID kill below is then all the more needed
            stopped = None
        if stopped != 0:
            for pid in pids.values():
                if pid.isdigit():
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(int(pid), signal.SIGKILL)
        self.api.close()


@contextlib.contextmanager
def served_stack(base: Path) -> Iterator[LiveStack]:
    """`make serve` for real, on free loopback ports, in a copy of the checkout under `base`
    with a fresh Prefect database; stopped (scripts/stop.sh, then by PID) at the end."""
    if not (REPO_ROOT / ".git").exists():
        pytest.skip("needs a git checkout to copy")
    checkout = copy_checkout(base / "checkout")
    # A later session stops it if this one is killed before `finally` (tests/leftover_stacks.py).
    recorded = leftover_stacks.record(checkout / ".serve")
    prefect_port, mlflow_port = free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "MLFLOW_", "INSTRUCTFLOW_"))
    }
    env |= {
        "PREFECT_HOME": str(base / "prefect-home"),
        "PREFECT_PORT": str(prefect_port),
        "MLFLOW_PORT": str(mlflow_port),
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    stack = LiveStack(checkout, env, prefect_port, mlflow_port)
    try:
        served = subprocess.run(
            ["bash", "scripts/serve.sh"],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=420,
        )
        stack.serve_output = served.stdout + served.stderr
        assert served.returncode == 0, stack.serve_output
        yield stack
    finally:
        stack.stop()
        leftover_stacks.forget(recorded)
