"""What `make stop` does with the deployments' scheduled runs (flows/stop_runs.py calls this).

The schedules stay as they are: pausing one is a person's choice (`make serve` ends with the
command for each). But a scheduled run already late when the stack stops (it fell due while
the stack was up and no worker took it: the worker was gone, or the run fell due in the last
minute) was left Scheduled, and the next `make serve`'s worker started it at once, days later
perhaps, with no chance to skip it (serve.sh names late runs as the worker starts them). So
make stop cancels those (Prefect's own Cancelled, as for a run with no infrastructure), names
each, and says when the next scheduled run falls due and what becomes of it.
"""

import datetime

import httpx

from instructflow.flows.schedules import LATE_AFTER

# A run Prefect retries, or one resumed after a pause, is Scheduled too, and may have a
# process: only these names are runs a schedule made and nothing has started.
NOT_STARTED = ["Scheduled", "Late"]
MESSAGE = (
    "cancelled by make stop (scripts/stop.sh): it was late, and the next make serve would start it"
)


def scheduled_runs(client: httpx.Client, before=None, after=None, limit: int = 200) -> list[dict]:
    """Scheduled runs nothing has started, due in [after, before], soonest first."""
    due = {"before_": before and before.isoformat(), "after_": after and after.isoformat()}
    state = {"type": {"any_": ["SCHEDULED"]}, "name": {"any_": NOT_STARTED}}
    query = {"state": state, "expected_start_time": due}
    found = client.post(
        "/flow_runs/filter",
        json={"flow_runs": query, "sort": "EXPECTED_START_TIME_ASC", "limit": limit},
    )
    found.raise_for_status()
    return found.json()


def deployment_names(client: httpx.Client, runs: list[dict]) -> dict[str, str]:
    ids = sorted({run["deployment_id"] for run in runs if run.get("deployment_id")})
    if not ids:
        return {}
    found = client.post("/deployments/filter", json={"deployments": {"id": {"any_": ids}}})
    found.raise_for_status()
    return {deployment["id"]: deployment["name"] for deployment in found.json()}


def describe(run: dict, names: dict[str, str]) -> str:
    due = datetime.datetime.fromisoformat(run["expected_start_time"]).astimezone(datetime.UTC)
    deployment = names.get(run.get("deployment_id") or "", "no deployment")
    return f"{run['name']} ({run['id']}, {deployment}, due {due:%Y-%m-%d %H:%M} UTC)"


def cancel_late(client: httpx.Client, run: dict) -> None:
    state = {"type": "CANCELLED", "name": "Cancelled", "message": MESSAGE}
    client.post(f"/flow_runs/{run['id']}/set_state", json={"state": state}).raise_for_status()


def stop_scheduled(client: httpx.Client, cancel_each, say=print) -> list[dict]:
    """Cancel the late scheduled runs and say what the schedules do next; the runs whose
    cancel failed (`cancel_each` says each)."""
    now = datetime.datetime.now(datetime.UTC)
    late = scheduled_runs(client, before=now - LATE_AFTER)
    upcoming = scheduled_runs(client, after=now - LATE_AFTER, limit=1)
    names = deployment_names(client, late + upcoming)
    failed = cancel_each(client, late, cancel_late, say)
    skipped = [describe(run, names) for run in late if run not in failed]
    if skipped:
        say(
            f"cancelled {len(skipped)} late scheduled run(s) (due, and no worker started them),"
            f" which the next make serve would start at once: {', '.join(skipped)}"
        )
    if upcoming:
        say(
            "make stop leaves the schedules as they are: the next scheduled run is"
            f" {describe(upcoming[0], names)};"
            " if the stack is down then, the next make serve starts it (make serve prints the"
            " command that pauses each schedule)"
        )
    return failed
