"""What `make stop` does first: the flow runs still in progress on the served Prefect server end
cleanly before the servers go.

A flow run the worker started runs in a session of its own (Prefect starts it so), and one
`make demo` started in another shell uses the served servers too (tasks/served_stack.py):
stopping the worker's process group missed both. They went on against servers that were
gone, waited up to 300 s for them (tasks/outages.py), then failed, their Prefect flow runs
left Running for good. So scripts/stop.sh (`make stop`) runs this first, while the worker and
both servers are still up: it names each run in progress, cancels it through the Prefect API
(what a cancel from the UI does: the run gets SIGTERM, checkpoints, and its report says
`status: interrupted`; the same run again resumes), and waits for it to end, at most
WAIT_SECONDS, before the worker and the servers are stopped.

A deployment's run that never started (Pending: claimed, no process of its own yet) ends only
through a worker: with make serve's worker not running, its Cancelling stayed so and make stop
waited the whole WAIT_SECONDS for it. Such a run is set Cancelled at once instead (what Prefect
itself does for a Scheduled run with no infrastructure) and not waited for.

Then the scheduled runs already late are cancelled, the schedules left as they are
(flows/stop_scheduled.py).

Each run's cancel is its own: one the API refuses is named with the answer, the others are
cancelled still, and the exit status is then 1 (scripts/stop.sh stops everything, then fails).

    python -m instructflow.flows.stop_runs STATE_DIR   # scripts/serve.sh's .serve/
"""

import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from instructflow.flows.stop_scheduled import stop_scheduled
from instructflow.tasks.served_stack import PREFECT, Service, command_line, served_pid

IN_PROGRESS = ["PENDING", "RUNNING", "PAUSED", "CANCELLING"]
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
WAIT_SECONDS = 120.0  # a cancelled run stops within seconds (at most 8 s after its SIGTERM)
# A cancelled run shows Crashed first (Prefect's engine reports its SIGTERM so); its worker
# marks it Cancelled once the run's process has ended (it looks every few seconds: Cancelled
# 24 s after Cancelling, seen by hand), which it cannot do once it is stopped.
CRASHED_GRACE_SECONDS = 60.0
POLL_SECONDS = 1.0
MESSAGE = "cancelled by make stop (scripts/stop.sh): the servers it ran against are stopping"
# scripts/serve.sh's worker: the one process that starts (and ends) the deployments' runs.
WORKER = Service("Prefect worker", "worker.pid", "prefect worker start", "", "")


def served_api_url(state_dir: Path) -> str | None:
    """The API of the Prefect server whose PID file is in `state_dir`, from its command line."""
    pid = served_pid(PREFECT, [state_dir])
    if pid is None:
        return None
    args = command_line(pid)
    host = re.search(r"--host[ =](\S+)", args)
    port = re.search(r"--port[ =](\d+)", args)
    if host is None or port is None:
        return None
    return f"http://{host.group(1)}:{port.group(1)}/api"


def runs_in_progress(client: httpx.Client) -> list[dict]:
    found = client.post(
        "/flow_runs/filter", json={"flow_runs": {"state": {"type": {"any_": IN_PROGRESS}}}}
    )
    found.raise_for_status()
    return found.json()


def describe(run: dict) -> str:
    state = (run.get("state") or {}).get("name", "?")
    return f"{run['name']} ({run['id']}, {state})"


def cancel(client: httpx.Client, run: dict) -> None:
    """Set the run Cancelling, as `prefect flow-run cancel` does: its worker (or, for a run
    `instructflow run` started, the run itself) sends its process SIGTERM."""
    if (run.get("state") or {}).get("type") == "CANCELLING":
        return
    state = {"type": "CANCELLING", "name": "Cancelling", "message": MESSAGE}
    client.post(f"/flow_runs/{run['id']}/set_state", json={"state": state}).raise_for_status()


def worker_running(state_dir: Path) -> bool:
    return served_pid(WORKER, [state_dir]) is not None


def never_started(run: dict) -> bool:
    """A deployment's run no process runs yet: only a worker would start it, or end it."""
    return bool(run.get("deployment_id")) and run.get("start_time") is None


def cancel_now(client: httpx.Client, run: dict) -> None:
    """Set the run Cancelled directly: there is no process to send SIGTERM to, nor a worker
    to mark it Cancelled afterwards."""
    state = {"type": "CANCELLED", "name": "Cancelled", "message": f"{MESSAGE} (it had not started)"}
    client.post(f"/flow_runs/{run['id']}/set_state", json={"state": state}).raise_for_status()


def state_of(client: httpx.Client, run_id: str) -> dict:
    try:
        found = client.get(f"/flow_runs/{run_id}")
        found.raise_for_status()
    except httpx.HTTPError:  # busy for a moment: asked again on the next round
        return {}
    return found.json().get("state") or {}


def wait_for_ends(
    client: httpx.Client, runs: list[dict], wait_s: float = WAIT_SECONDS, say=print
) -> list[dict]:
    """Wait until each run has ended (a Crashed one: CRASHED_GRACE_SECONDS more, for its
    worker to mark it Cancelled); the runs still going at the deadline."""
    deadline = time.monotonic() + wait_s
    crashed_since: dict[str, float] = {}
    going = list(runs)
    while going and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        for run in list(going):
            state = state_of(client, run["id"])
            kind = state.get("type")
            if kind == "CRASHED":
                crashed_since.setdefault(run["id"], time.monotonic())
                if time.monotonic() - crashed_since[run["id"]] < CRASHED_GRACE_SECONDS:
                    continue
            if kind in FINAL:
                say(f"flow run {run['name']} ended {state.get('name', kind)}")
                going.remove(run)
    return going


def reason(error: httpx.HTTPError) -> str:
    """What the API answered, in one line (httpx's own message spans three)."""
    if isinstance(error, httpx.HTTPStatusError):
        answer = error.response
        return f"{answer.status_code} {answer.reason_phrase}: {answer.text[:200]}".replace(
            "\n", " "
        )
    return f"{type(error).__name__}: {error}".replace("\n", " ")


def cancel_each(client: httpx.Client, runs: list[dict], how, say=print) -> list[dict]:
    """Cancel each run with `how`; the runs the API refused, each said in one line. One run's
    failure does not stop the others' cancels."""
    failed = []
    for run in runs:
        try:
            how(client, run)
        except httpx.HTTPError as error:
            say(f"could not cancel flow run {run['name']} ({run['id']}): {reason(error)}")
            failed.append(run)
    return failed


@dataclass(frozen=True)
class Stopped:
    going: list[dict]  # cancelled, still not ended after the wait
    failed: list[dict]  # their cancel failed: they may run on


def stop_runs(
    client: httpx.Client, wait_s: float = WAIT_SECONDS, say=print, worker_up: bool = True
) -> Stopped:
    """Cancel every flow run in progress and wait for those that end through a process. Without
    a worker (`worker_up` False) a deployment's run that never started is cancelled outright:
    nothing would ever start it, or end its Cancelling."""
    runs = runs_in_progress(client)
    if not runs:
        return Stopped([], [])
    say(f"flow runs in progress: {', '.join(describe(run) for run in runs)}")
    stranded = [] if worker_up else [run for run in runs if never_started(run)]
    failed = cancel_each(client, stranded, cancel_now, say)
    for run in stranded:
        if run not in failed:
            say(
                f"flow run {run['name']} cancelled:"
                " it had not started, and no worker runs to start it"
            )
    runs = [run for run in runs if run not in stranded]
    if not runs:
        return Stopped([], failed)
    say(
        "cancelling them, as a cancel from the Prefect UI does: each saves a checkpoint and ends"
        " `interrupted` (the same run again resumes from it);"
        f" waiting up to {wait_s:.0f} s for them to end"
    )
    refused = cancel_each(client, runs, cancel, say)
    going = wait_for_ends(client, [run for run in runs if run not in refused], wait_s, say)
    if going:
        say(
            f"still running after {wait_s:.0f} s: {', '.join(describe(run) for run in going)};"
            " the worker and the servers stop anyway (Prefect's worker ends a run it started as"
            " it stops, with SIGKILL; a run started elsewhere fails once it finds them gone)"
        )
    return Stopped(going, failed + refused)


def main(argv: list[str]) -> int:
    state_dir = Path(argv[0])
    url = served_api_url(state_dir)
    if url is None:  # no Prefect server of make serve's up: nothing can be asked or cancelled
        return 0
    with httpx.Client(base_url=url, timeout=30) as client:
        try:
            stopped = stop_runs(client, WAIT_SECONDS, worker_up=worker_running(state_dir))
        except httpx.HTTPError as error:
            print(f"could not ask {url} for the flow runs in progress ({error}); stopping anyway")
            return 0
        try:
            late_failed = stop_scheduled(client, cancel_each)
        except httpx.HTTPError as error:
            print(f"could not ask {url} for the late scheduled runs ({error}); stopping anyway")
            late_failed = []
    # Non-zero (make stop still stops everything): a run whose cancel failed may run on.
    return 1 if stopped.failed or late_failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
