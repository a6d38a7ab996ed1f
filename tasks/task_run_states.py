"""Task runs whose end a lost Prefect server missed, set at the flow's end, or named.

Prefect 3 tells its server a task run's states by events only. While the server is
lost, its events client keeps those it could not send and sends them again once it
connects again; an end it never sends again (the process ending first), or one a
stopping server took but never recorded, leaves that task run Running in the UI for
good, under a Completed flow run. So a flow whose process found Prefect's API lost
during the run (outages.prefect_api_lost_since: a wait for it, its events client
giving an event up, a failed cancel poll) reads its task runs back once at its end and
sets those not final to how the run knows they ended (`record`, by flows/stages.py),
or names them in one line. A run that saw no outage makes no Prefect call for this:
reading back every run's task runs, waiting for them to settle, cost each ~2 s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from instructflow.tasks import outages

MISSED = "Prefect's server missed this end while it was lost; set at the flow's end"

_lock = threading.Lock()  # a sweep's seeds end their stages in threads of one process
_ended: dict[str, dict[str, tuple[str, Any]]] = {}  # flow run -> task run -> (stage, state)


def record(name: str, state: Any) -> None:
    """Remember how stage `name`'s task run ended (a final state); a state of no task run
    (a result taken from the stage's folder) is left out."""
    details = state.state_details
    if details.task_run_id is None or details.flow_run_id is None or not state.is_final():
        return
    with _lock:
        ended = _ended.setdefault(str(details.flow_run_id), {})
        ended[str(details.task_run_id)] = (name, state)


@contextmanager
def settled_at_end(flow_run_id: Any) -> Iterator[None]:
    """Around a flow's body: `settle` once it ends, however it ends."""
    outages.watch_prefect_events()
    started = time.time()
    try:
        yield
    finally:
        settle(flow_run_id, started)


def settle(flow_run_id: Any, since: float) -> None:
    """If this process found Prefect's API lost since `since`: the flow run's task runs the
    server shows unfinished set to how they ended, or named, one line each. Never raises:
    the run has its outcome already."""
    with _lock:
        ended = _ended.pop(str(flow_run_id), {})
    if not flow_run_id or not outages.prefect_api_lost_since(since):
        return
    url = outages.prefect_api_url()
    if url and not outages.server_answers(url, outages.PROBE_SECONDS):  # a hung one: 5 s
        waited = f"no answer to /health within {outages.PROBE_SECONDS:.0f} s"
        print(_unanswered_line(waited, ended), flush=True)
        return
    try:
        set_now, unknown = _set_unfinished(flow_run_id, ended)
    except Exception as error:  # noqa: BLE001  (lost again, most likely)
        reason = f"{type(error).__name__}: {outages.cause_in_words(str(error) or '-')}"
        print(_unanswered_line(reason, ended), flush=True)
        return
    if set_now:
        print(
            "Prefect's server missed the end of task runs while it was lost; set now: "
            + ", ".join(set_now),
            flush=True,
        )
    if unknown:
        print(
            "warning: Prefect's server missed the end of task runs while it was lost, which"
            " stay unfinished in its UI (this run does not know how they ended): "
            + ", ".join(unknown),
            flush=True,
        )


def _set_unfinished(flow_run_id: Any, ended: dict) -> tuple[list[str], list[str]]:
    """Read the flow run's task runs once; set those not final whose end the run knows.
    Returns them ("stage State") and the others ("name (id, State)")."""
    from prefect.client.orchestration import get_client

    from instructflow.tasks.leftovers import unfinished_task_runs

    set_now, unknown = [], []
    with get_client(sync_client=True) as client:
        for run in unfinished_task_runs(client, flow_run_id):
            name, state = ended.get(str(run.id), (None, None))
            if state is None:
                unknown.append(f"{run.name} ({run.id}, {run.state.name})")
                continue
            client.set_task_run_state(run.id, _missed_end(state), force=True)
            set_now.append(f"{name} {state.name}")
    return set_now, unknown


def _missed_end(state: Any) -> Any:
    """The ended state again, said to be set late, without its result (the server keeps
    none for these stages), at the time the stage ended."""
    from prefect.client.schemas.objects import State

    message = f"{MISSED}: {state.message}" if state.message else MISSED
    return State(type=state.type, name=state.name, message=message, timestamp=state.timestamp)


def _unanswered_line(reason: str, ended: dict) -> str:
    where = outages.prefect_api_url() or "the temporary server"
    named = ", ".join(f"{name} ({task_run_id})" for task_run_id, (name, _) in ended.items())
    return (
        f"warning: Prefect's API ({where}) does not answer at the run's end ({reason}): the"
        " task runs whose end it missed while it was lost stay Running in its UI; this run's"
        f" stages: {named or 'none ran'}"
    )
