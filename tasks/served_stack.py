"""A command run while `make serve` is up uses its servers, not servers of its own.

Without PREFECT_API_URL a run starts Prefect's temporary server on PREFECT_HOME's
database, and without MLFLOW_TRACKING_URI it writes the SQLite store under mlflow/
directly. While `make serve` (scripts/serve.sh) shows those same stores, that made a
second Prefect server on the database the served one holds (two servers racing on one
SQLite file, each running Prefect's services), and a second writer beside the MLflow
server. So, before Prefect is imported, the command line points the run at the served
ones when all of these hold for a store:

- you exported nothing for it (PREFECT_API_URL, MLFLOW_TRACKING_URI win);
- `make serve` wrote that it serves this very store (its served-at.url beside the
  store: PREFECT_HOME for Prefect, the project's mlflow/ for MLflow);
- a PID file in .serve/ names a live process that runs that server (not a stale file
  whose PID the system gave to something else);
- the server answers its /health with 200 now.

Otherwise the run does what it did before (a temporary Prefect server, the SQLite
store), and a server whose process is up but does not answer is said in one line.
"""

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path

from instructflow.tasks.env import defaults, served_at
from instructflow.tasks.paths import mlflow_dir, project_root

HEALTH_SECONDS = 5.0  # a served server slower than this to answer /health is left alone


@dataclass(frozen=True)
class Service:
    """One server `make serve` starts, and the variable that points a run at it."""

    name: str  # as in the UI line
    pid_file: str  # in .serve/
    command: str  # what its process runs (scripts/serve.sh's command_of)
    variable: str  # the variable a run reads its address from
    health: str  # the path under the served URL that answers 200
    api: str = ""  # what the variable adds to the served URL


PREFECT = Service(
    "Prefect",
    "prefect-server.pid",
    "prefect server start",
    "PREFECT_API_URL",
    "/api/health",
    "/api",
)
MLFLOW = Service("MLflow", "mlflow.pid", "mlflow server", "MLFLOW_TRACKING_URI", "/health")


def serve_state_dirs() -> list[Path]:
    """Where scripts/serve.sh keeps its PID files: .serve/ of the checkout it runs from
    (this code's), and of the project root (the same folder, unless INSTRUCTFLOW_ROOT
    names another, or the environment's code is another checkout's)."""
    code_dir = Path(__file__).resolve().parents[1]
    return list(dict.fromkeys([code_dir / ".serve", project_root() / ".serve"]))


def served_pid(service: Service, state_dirs: list[Path]) -> int | None:
    """The live process of `service` a PID file in `state_dirs` names, else None."""
    for state in state_dirs:
        try:
            pid = int((state / service.pid_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if service.command in command_line(pid):
            return pid
    return None


def command_line(pid: int) -> str:
    """What process `pid` runs ('' for none)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:  # gone, or no /proc (macOS): ask ps
        found = subprocess.run(
            ["ps", "-ww", "-p", str(pid), "-o", "args="], capture_output=True, text=True
        )
        return found.stdout if found.returncode == 0 else ""


def answers(url: str) -> bool:
    """Whether GET `url` answers 200 within HEALTH_SECONDS."""
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_SECONDS) as response:  # noqa: S310
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def served_url(
    service: Service, store: Path, state_dirs: list[Path], notes: list[str]
) -> str | None:
    """The URL `make serve` serves `store` at with `service`, when it is up and answers."""
    url = served_at(store)
    pid = served_pid(service, state_dirs) if url else None
    if url is None or pid is None:
        return None
    if not answers(url + service.health):
        notes.append(
            f"make serve's {service.name} server (pid {pid}) does not answer {url}{service.health}:"
            " this run does without it"
        )
        return None
    return url


def use_served_stack(
    environ: MutableMapping[str, str] = os.environ, say=lambda line: print(line, file=sys.stderr)
) -> dict[str, str]:
    """Point this process at the servers `make serve` runs on this project's stores, where
    you exported nothing else (see above); one line says so. Returns what was set.
    Call it after env.apply_defaults (PREFECT_HOME) and before Prefect is imported."""
    stores = {
        PREFECT: Path(environ.get("PREFECT_HOME") or defaults()["PREFECT_HOME"]),
        MLFLOW: mlflow_dir(),
    }
    state_dirs, notes, used, added = serve_state_dirs(), [], [], {}
    for service, store in stores.items():
        if environ.get(service.variable):
            continue
        if url := served_url(service, store, state_dirs, notes):
            added[service.variable] = url + service.api
            used.append(f"{service.name} {url}")
    environ.update(added)
    for line in notes:
        say(f"instructflow: {line}")
    if used:
        say(f"instructflow: using the servers make serve started: {', '.join(used)}")
    return added
