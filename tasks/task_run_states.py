"""Stage task runs whose end Prefect's server never heard of, set from what the run knows.

Prefect 3 runs a flow's tasks in the flow's process and tells the server their
states by events only. While the server is lost mid-run, its events client gives up
on each after its reconnection attempts ("Service 'EventsWorker' failed to process
item") and keeps it to send again when it next reconnects, which it does at its next
event (by hand, server stopped during PPO and back 60 s later: PPO's end was dropped,
then sent, every task run ended Completed). An end it never sends again (no event
after the server is back, the process ending first) leaves that task run Running in
the UI for good. The run knows how each stage's task run ended (`record`, called by
flows/stages.py); at the flow's end `settle` sets those the server still shows
unfinished to that end, or, where the server does not answer then, says in one line
which may stay Running.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from instructflow.tasks import outages

# How long the server gets to record ends its events did bring (it records them a
# moment after they arrive) before a task run it shows unfinished is taken as lost.
RECORDING_SECONDS = 2.0

_lock = threading.Lock()
_ended: dict[Any, dict[Any, tuple[str, Any]]] = {}  # flow run id -> task run id -> (name, state)


def record(name: str, state: Any) -> None:
    """Remember how the stage `name`'s task run ended (a final Prefect state); a state of no
    task run (a result taken from the stage's folder) is left out."""
    details = state.state_details
    if details.task_run_id is None or details.flow_run_id is None or not state.is_final():
        return
    with _lock:
        _ended.setdefault(details.flow_run_id, {})[details.task_run_id] = (name, state)


def settle() -> None:
    """At the flow's end (in its flow run): its stage task runs the server shows unfinished
    set to how they ended, with one line saying so; where the server does not answer, one
    line naming them. Never raises: the run's own outcome is what counts."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    with _lock:
        ended = _ended.pop(context.flow_run.id, {})
    url = outages.prefect_api_url()
    if not ended or not url:  # no server of its own to lose: the temporary one is the run's
        return
    try:
        if not outages.server_answers(url, outages.PROBE_SECONDS):
            print(_unheard_line(url, ended), flush=True)
            return
        _set_unfinished(ended)
    except Exception as error:  # noqa: BLE001  (a cleanup: the run has its outcome already)
        print(f"{_unheard_line(url, ended)} ({type(error).__name__}: {error})", flush=True)


def _unheard_line(url: str, ended: dict) -> str:
    names = ", ".join(f"{name} ({task_run_id})" for task_run_id, (name, _) in ended.items())
    return (
        f"Prefect's API ({url}) does not answer at the run's end: of this run's task runs,"
        f" those whose end it missed while it was lost stay Running in its UI: {names}"
    )


def _set_unfinished(ended: dict) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        unfinished = _unfinished(client, ended, missing_too=True)
        if unfinished:  # perhaps only not recorded yet
            time.sleep(RECORDING_SECONDS)
            unfinished = _unfinished(client, ended)
        for task_run_id in unfinished:
            client.set_task_run_state(task_run_id, _end_of(ended[task_run_id][1]), force=True)
    if unfinished:
        named = ", ".join(f"{ended[i][0]} {ended[i][1].name}" for i in unfinished)
        print(
            "Prefect's server missed the end of task runs while it was lost; set now: " + named,
            flush=True,
        )


def _unfinished(client, ended: dict, missing_too: bool = False) -> list:
    """The task runs of `ended` the server shows in a state that is not final; with
    `missing_too`, also those it has not recorded (yet: a run it never heard of is not in
    its UI, so not left Running there)."""
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterId

    runs = client.read_task_runs(
        task_run_filter=TaskRunFilter(id=TaskRunFilterId(any_=list(ended)))
    )
    final = {run.id for run in runs if run.state is not None and run.state.is_final()}
    shown = {run.id for run in runs}
    return [i for i in ended if i not in final and (missing_too or i in shown)]


def _end_of(state: Any) -> Any:
    """The ended state again, without its result (the server keeps none for these stages),
    at the time the stage ended."""
    from prefect.client.schemas.objects import State

    return State(type=state.type, name=state.name, message=state.message, timestamp=state.timestamp)
