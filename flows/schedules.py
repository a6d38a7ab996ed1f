"""What `make serve` says about the deployments' schedules: which are on, and how to switch each.

scheduled-retrain's weekly schedule is on from the moment it is deployed (retraining on
its own is the deployment's point): while the stack is up, a tiny run starts by itself
every Monday 03:00 UTC. That should not come as a surprise, so `make serve` (scripts/
serve.sh) ends with these lines, read from the server (a schedule switched off in the UI
reads off), each with the Prefect command that pauses or resumes it.

    python -m instructflow.flows.schedules
"""

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instructflow.flows.deploy_schema import FLOW


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


def prefect_command() -> str:
    """How to call this environment's `prefect` against the API in force."""
    prefect = Path(sys.executable).parent / "prefect"
    api = os.environ.get("PREFECT_API_URL")
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


if __name__ == "__main__":
    print("\n".join(schedule_lines(read_schedules(), prefect_command())))
