"""What a killed run leaves behind, found and cleared by the next run.

kill -9 (or a power cut) skips every `finally`: the MLflow runs stay RUNNING,
the Prefect flow run stays Running, and the registry's concurrency slot, if
it held it, stays taken (Prefect frees a slot when its lease expires, but only a server that
runs the repossessor service does that; the ephemeral server of a plain
`instructflow run` does not, so the slot would be held forever).

Every pipeline run therefore holds an exclusive lock (flock) on a file of its
own under runs/.live/ for as long as it lives. The kernel drops the lock when
the process dies, however it dies. At start, a run takes its own lock, then:
- every RUNNING MLflow run of this project root and host whose lock is free
  is marked KILLED, with its RUNNING stage runs; its Prefect flow run is set
  to Crashed (FINISHED and Completed where its report says it had completed);
- if no other run of this project root is alive and the Prefect API is on
  this machine, the registry slot is set back to 0 in use. (Training slots
  are file locks of the same kind: instructflow.tasks.concurrency.)
- Prefect's temporary (ephemeral) server of a killed run outlives it: Prefect
  stops it in a `finally` that kill -9 skips. One of this project's (same
  PREFECT_HOME) whose parent died (adopted by init) is stopped.
"""

import fcntl
import json
import os
import signal
import socket
import uuid
from pathlib import Path

from mlflow import MlflowClient

from instructflow.tasks.paths import project_root, reports_dir, runs_dir
from instructflow.tasks.run_tree import end_running_below

LIVE = ".live"
# The run's liveness token is bookkeeping, read only while its MLflow run is RUNNING: it is
# deleted from the run once the run ends (lifecycle.ended) or is found dead (reap), so the
# MLflow UI shows it on no finished run. (The UI hides only keys that start with `mlflow.`
# or `_mlflow_`: MLflow's own namespace, not a project's.) Host and root stay: where it ran.
TAG_TOKEN, TAG_HOST, TAG_ROOT = "instructflow_live_token", "instructflow_host", "instructflow_root"
_held: dict[str, int] = {}  # token -> open file descriptor holding the lock


def live_dir() -> Path:
    return runs_dir() / LIVE


def register() -> dict[str, str]:
    """Lock a file for this run (released by the kernel when the process ends); return the tags that name it."""
    token = uuid.uuid4().hex
    folder = live_dir()
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / token, os.O_CREAT | os.O_RDWR, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, str(os.getpid()).encode())
    _held[token] = fd
    return {TAG_TOKEN: token, TAG_HOST: socket.gethostname(), TAG_ROOT: str(project_root())}


def unregister(token: str) -> None:
    fd = _held.pop(token, None)
    if fd is not None:
        (live_dir() / token).unlink(missing_ok=True)
        os.close(fd)


def is_alive(token: str) -> bool:
    """True while the run that registered `token` holds its lock (no token: not alive, a run
    that lost it while ending)."""
    if not token:
        return False
    if token in _held:
        return True
    path = live_dir() / token
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def others_alive(own: str) -> bool:
    """Is another run of this project root alive? Files of dead runs are removed on the way."""
    return _alive_but(own)


def alive_in_other_processes() -> bool:
    """Is a run (or a promote) of this project root alive in another process than this one?"""
    return _alive_but(*_held)


def _alive_but(*skipped: str) -> bool:
    folder = live_dir()
    alive = False
    for path in folder.iterdir() if folder.is_dir() else []:
        if path.name in skipped:
            continue
        if is_alive(path.name):
            alive = True
        else:
            path.unlink(missing_ok=True)
    return alive


KILLED_REASON = (
    "killed: its process ended without closing its MLflow run (kill -9, the OOM killer, a "
    "power cut, or a lost tracking server); found by a later run"
)


def reap_mlflow_runs(client: MlflowClient, experiment_id: str) -> dict[str, str]:
    """Close the RUNNING runs of dead pipeline runs of this root and host: KILLED, or FINISHED
    where the run's report says it completed (it died in the moment between writing its
    report and closing its run). Returns {parent run id: the status given}."""
    mine = (
        f"attributes.status = 'RUNNING' and tags.{TAG_HOST} = '{socket.gethostname()}'"
        f" and tags.{TAG_ROOT} = '{project_root()}'"
    )
    reaped = {}
    for parent in client.search_runs([experiment_id], filter_string=mine):
        if is_alive(parent.data.tags.get(TAG_TOKEN, "")):
            continue
        status = "FINISHED" if _reported_completed(parent.info.run_id) else "KILLED"
        end_running_below(client, parent.info.run_id, status)  # its stages, and any below them
        client.set_terminated(parent.info.run_id, status)
        if status == "KILLED":
            client.set_tag(parent.info.run_id, "killed_found_by", "a later run")
            if "failure_reason" not in parent.data.tags:  # a signal's stop wrote its own
                client.set_tag(parent.info.run_id, "failure_reason", KILLED_REASON)
        forget_token(client, parent.info.run_id, parent.data.tags)
        _close_flow_run(parent.data.tags.get("prefect_flow_run_id", ""), status)
        reaped[parent.info.run_id] = status
    return reaped


def _reported_completed(run_id: str) -> bool:
    try:
        report = json.loads((reports_dir() / run_id / "report.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(report, dict) and report.get("status") == "completed"


def forget_token(client: MlflowClient, run_id: str, tags: dict[str, str]) -> None:
    """Delete the liveness token from a run that no longer runs (it meant nothing after)."""
    if TAG_TOKEN in tags:
        client.delete_tag(run_id, TAG_TOKEN)


def _close_flow_run(flow_run_id: str, mlflow_status: str = "KILLED") -> None:
    """The dead run's Prefect flow run as its MLflow run was closed: Crashed, or Completed
    where its report says it completed (the flow run would say Crashed beside a finished run)."""
    if not flow_run_id:
        return
    from prefect.client.orchestration import get_client
    from prefect.states import Completed, Crashed

    if mlflow_status == "FINISHED":
        state = Completed(message="completed (its report written); its process was then killed")
    else:
        state = Crashed(message="the process was killed")
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(flow_run_id)
        except Exception:  # noqa: BLE001  (another Prefect database: nothing to mark here)
            return
        if run.state is not None and not run.state.is_final():
            client.set_flow_run_state(flow_run_id, state, force=True)
        # Its task runs too: the stage the kill interrupted would show Running for ever
        # under a Crashed flow run (the UI's run graph and a task-run filter read them).
        for task_run in unfinished_task_runs(client, flow_run_id):
            client.set_task_run_state(
                task_run.id, Crashed(message="the process was killed"), force=True
            )


def unfinished_task_runs(client, flow_run_id) -> list:
    """The task runs of a flow run that Prefect's server shows in a state not final."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    )
    return [run for run in runs if run.state is not None and not run.state.is_final()]


def prefect_api_is_local() -> bool:
    """The ephemeral server, or a server on this machine (a slot held elsewhere is not ours to free)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value() or ""
    return not url or any(host in url for host in ("//127.0.0.1", "//localhost", "//[::1]"))


def free_orphaned_slots(own_token: str, limits: list[str]) -> list[str]:
    """Set `limits` back to 0 slots in use if no other run of this root lives; return those that were held."""
    if others_alive(own_token) or not prefect_api_is_local():
        return []
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    freed = []
    with get_client(sync_client=True) as client:
        for name in limits:
            limit = client.read_global_concurrency_limit_by_name(name)
            if limit.active_slots:
                client.update_global_concurrency_limit(
                    name, GlobalConcurrencyLimitUpdate(active_slots=0)
                )
                freed.append(name)
    return freed


EPHEMERAL_APP = b"prefect.server.api.server:create_app"


def ephemeral_servers(prefect_home: str | None) -> dict[int, int]:
    """Prefect ephemeral servers with this PREFECT_HOME (None: any): pid -> parent pid.

    Read from /proc (Linux; elsewhere none are found).
    """
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if EPHEMERAL_APP not in (entry / "cmdline").read_bytes().split(b"\0"):
                continue
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            pairs = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours to read
        environ = dict(pair.split(b"=", 1) for pair in pairs if b"=" in pair)
        if environ.get(b"PREFECT__SERVER_EPHEMERAL") == b"1" and (
            prefect_home is None or environ.get(b"PREFECT_HOME") == prefect_home.encode()
        ):
            found[int(entry.name)] = parent
    return found


def orphaned_servers(prefect_home: str) -> list[int]:
    """Pids of this PREFECT_HOME's ephemeral servers whose parent died (adopted by init;
    where a subreaper adopts orphans instead, they are not found)."""
    return [pid for pid, parent in ephemeral_servers(prefect_home).items() if parent == 1]


def stop_orphaned_servers() -> list[int]:
    """SIGTERM every orphaned ephemeral server of this project (see orphaned_servers); their pids."""
    home = os.environ.get("PREFECT_HOME")
    stopped = []
    for pid in orphaned_servers(home) if home else []:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        stopped.append(pid)
    return stopped
