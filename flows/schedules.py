"""What `make serve` says about the deployments' schedules: which are on, and how to switch each.

scheduled-retrain's weekly schedule is on from the moment it is deployed (retraining on
its own is the deployment's point): while the stack is up, a tiny run starts by itself
every Monday 03:00 UTC. That should not come as a surprise, so `make serve` (scripts/
serve.sh) ends with these lines, read from the server (a schedule switched off in the UI
reads off), each with the Prefect command that pauses or resumes it.

Prefect creates a schedule's next runs ahead of time, and a worker starts a run whose
time has passed (state Late) as soon as it sees it: a Monday retrain that fell while the
stack was down starts the moment `make serve` brings the worker back (seen: a run due
two days before started within seconds). scripts/serve.sh reads those before it starts
the worker, and these lines name them, with the command that cancels each.

    python -m instructflow.flows.schedules
"""

import datetime
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instructflow.flows.deploy_schema import FLOW
from instructflow.tasks import outages


@dataclass(frozen=True)
class Schedule:
    deployment: str
    schedule_id: str
    slug: str | None
    cron: str
    timezone: str
    active: bool
    profile: str | None


def profile_of(parameters: dict[str, Any] | None) -> str | None:
    return ((parameters or {}).get("params") or {}).get("profile")


def read_schedules(flow_name: str = FLOW) -> list[Schedule]:
    """Every schedule of `flow_name`'s deployments on the Prefect API in force."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        deployments = client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name]))
        )
    return [
        Schedule(
            deployment=deployment.name,
            schedule_id=str(schedule.id),
            slug=schedule.slug,
            cron=getattr(schedule.schedule, "cron", None) or str(schedule.schedule),
            timezone=getattr(schedule.schedule, "timezone", None) or "UTC",
            active=schedule.active,
            # A schedule's own parameters replace the deployment's.
            profile=profile_of(schedule.parameters) or profile_of(deployment.parameters),
        )
        for deployment in sorted(deployments, key=lambda d: d.name)
        # The ones on first: what starts runs by itself is what a reader must not miss.
        for schedule in sorted(deployment.schedules, key=lambda schedule: not schedule.active)
    ]


@dataclass(frozen=True)
class LateRun:
    deployment: str
    flow_run_id: str
    name: str
    due: datetime.datetime


# A run due this long ago or more is late: it was not started when due (the stack was down).
LATE_AFTER = datetime.timedelta(minutes=1)


def read_late_runs(flow_name: str = FLOW) -> list[LateRun]:
    """The scheduled runs of `flow_name`'s deployments whose time has passed, oldest first."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    before = datetime.datetime.now(datetime.UTC) - LATE_AFTER
    with get_client(sync_client=True) as client:
        names = {
            d.id: d.name
            for d in client.read_deployments(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name]))
            )
        }
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
                expected_start_time=FlowRunFilterExpectedStartTime(before_=before),
            ),
        )
    late = [
        LateRun(names.get(r.deployment_id, "?"), str(r.id), r.name, r.expected_start_time)
        for r in runs
    ]
    return sorted(late, key=lambda run: run.due)


def late_lines(runs: list[LateRun], prefect: str = "prefect") -> list[str]:
    """The runs that were due while the stack was down, which the worker starts now."""
    if not runs:
        return []
    lines = [
        f"{len(runs)} scheduled run(s) fell due while the stack was down; the worker starts them"
        " now (Prefect runs a late run). To skip one, cancel it:"
    ]
    for run in runs:
        due = run.due.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines.append(
            f"  {prefect} flow-run cancel {run.flow_run_id}   # {run.deployment}, due {due}"
        )
    return lines


def prefect_command() -> str:
    """How to call this environment's `prefect` against the API in force."""
    prefect = Path(sys.executable).parent / "prefect"
    api = outages.configured_prefect_api()
    return f"PREFECT_API_URL={api} {prefect}" if api else str(prefect)


def schedule_lines(schedules: list[Schedule], prefect: str = "prefect") -> list[str]:
    """Each schedule, on or off, what it runs, and the command that switches it."""
    lines = []
    for s in schedules:
        name = f"{s.deployment}" + (f" ({s.slug})" if s.slug else "")
        runs = f"cron '{s.cron}' {s.timezone}, profile {s.profile or 'tiny'}"
        if s.active:
            lines.append(f"{name} is ON: starts a run by itself ({runs}). Pause it:")
            verb = "pause"
        else:
            lines.append(f"{name} is off ({runs}). Switch it on:")
            verb = "resume"
        lines.append(
            f"  {prefect} deployment schedule {verb} {FLOW}/{s.deployment} {s.schedule_id}"
        )
    if schedules:
        lines.append(
            "or toggle it in the UI (Deployments > the deployment > Schedules). A redeploy "
            "(make serve after prefect.yaml or the run form changed) sets them as prefect.yaml says again."
        )
    return lines


def main() -> None:
    prefect = prefect_command()
    print(
        "\n".join(schedule_lines(read_schedules(), prefect) + late_lines(read_late_runs(), prefect))
    )


if __name__ == "__main__":
    main()
