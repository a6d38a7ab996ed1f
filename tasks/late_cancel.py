"""A cancel that came as a run was finishing: the run completed, Prefect says Cancelling.

A cancel from Prefect's UI or CLI stops a run at its next step (tasks/interrupts.py).
One that arrives while the last stage writes to the registry, which never stops half-way,
finds nothing left to stop: the flow writes its report and returns, but Prefect's engine
cannot set Completed over the server's Cancelling. `instructflow run` then read the
result of a Cancelling state and died in Prefect's UnfinishedRun traceback after a
complete run, and the flow run ended Cancelled ("the run stopped on the SIGTERM it sent
itself"), while the report said completed and the registry held the new version.
"""

import json

from instructflow.tasks.paths import reports_dir

MESSAGE = (
    "completed: the cancel came after the run's last point to stop (the gate's registry "
    "writes and the report never stop half-way)"
)


def completed_report(state) -> dict | None:
    """The report of the run whose flow run ended in `state`, when that state is Cancelling
    or Cancelled yet the run completed (reports/latest moves only for a completed run, and
    names its flow run); None otherwise, a run a cancel did stop included."""
    if not (state.is_cancelling() or state.is_cancelled()):
        return None
    try:
        report = json.loads((reports_dir() / "latest" / "report.json").read_text())
    except (OSError, ValueError):
        return None
    this_run = report.get("run", {}).get("prefect_flow_run_id") == str(
        state.state_details.flow_run_id
    )
    return report if this_run and report.get("status") == "completed" else None


def mark_completed(state) -> None:
    """Set the flow run Completed, saying why, as the run did (before the process that marks a
    cancelled command-line run reads it: tasks/worker_exit.py leaves a finished state alone)."""
    from prefect.client.orchestration import get_client
    from prefect.states import Completed

    try:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(
                state.state_details.flow_run_id, Completed(message=MESSAGE), force=True
            )
    except Exception:  # the server away: the run completed all the same, and says so
        return
