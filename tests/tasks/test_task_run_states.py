"""A stage's end that a lost Prefect server missed is set at the flow's end, or named; a
run that saw no outage makes no Prefect call for it."""

import logging
import threading
import time

import httpx
import prefect.client.orchestration
import pytest
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run

from instructflow.flows import stages
from instructflow.tasks import outages, task_run_states


@task(persist_result=False)
def stage(out_dir: str, parent_run_id: str) -> dict:
    return {"dir": out_dir, "parent": parent_run_id}


@task(persist_result=False)
def helper() -> int:  # a task run not called as a stage: the run does not record its end
    return 1


@flow(persist_result=False)
def pipeline(out_dir: str, lost: bool = True, helper_too: bool = False) -> list[str]:
    with task_run_states.settled_at_end(flow_run.id):
        state = stages._call(stage, "sft", False, None, out_dir, "parent", {})
        ids = [str(state.state_details.task_run_id)]
        if helper_too:
            ids.append(str(helper(return_state=True).state_details.task_run_id))
        if lost:  # what Prefect's events client logs when it gives an event up
            logging.getLogger(outages.EVENTS_CLIENT_LOGGER).warning("Unable to connect to ...")
        _shown_by_server(ids)  # as their Running events are, long before a real run's end
    return ids


def _shown_by_server(task_run_ids: list[str], seconds: float = 30.0) -> None:
    """Wait until the server has recorded these task runs (it does so from their events,
    a moment after they arrive)."""
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterId

    wanted = TaskRunFilter(id=TaskRunFilterId(any_=task_run_ids))
    deadline = time.monotonic() + seconds
    with get_client(sync_client=True) as client:
        while len(client.read_task_runs(task_run_filter=wanted)) < len(task_run_ids):
            assert time.monotonic() < deadline, "the server never recorded the task runs"
            time.sleep(0.1)


@pytest.fixture
def ends_unheard(monkeypatch):
    """Prefect's server lost as a task ends: its task run's final state events never arrive
    (its events client gave them up), the earlier ones did."""
    import prefect.task_engine

    emit = prefect.task_engine.emit_task_run_state_change_event

    def emit_unless_final(task_run, initial_state, validated_state, **kwargs):
        if validated_state.is_final():
            return None
        return emit(task_run, initial_state, validated_state, **kwargs)

    monkeypatch.setattr(prefect.task_engine, "emit_task_run_state_change_event", emit_unless_final)


class ClientWatch:
    """Prefect's client as `settle` asks for it: each ask in `calls`; with `refuse`, refused
    as by a server still lost."""

    def __init__(self):
        self.calls, self.refuse = [], False


@pytest.fixture
def settle_client(monkeypatch) -> ClientWatch:
    watch, settle = ClientWatch(), task_run_states.settle

    def settle_watched(*args):
        own, real = threading.get_ident(), prefect.client.orchestration.get_client

        def get_client_watched(*a, **k):
            if threading.get_ident() != own:  # Prefect's own services, meanwhile
                return real(*a, **k)
            watch.calls.append(k)
            if watch.refuse:
                raise httpx.ConnectError("[Errno 111] Connection refused")
            return real(*a, **k)

        with monkeypatch.context() as patched:
            patched.setattr(prefect.client.orchestration, "get_client", get_client_watched)
            settle(*args)

    monkeypatch.setattr(task_run_states, "settle", settle_watched)
    return watch


def _server_state(task_run_id: str):
    with get_client(sync_client=True) as client:
        return client.read_task_run(task_run_id).state


def test_a_stage_end_the_server_missed_is_set_when_it_answers_again(
    prefect_harness, ends_unheard, tmp_path, capsys
):
    # given a run whose stage ended while Prefect's server was lost (its end never sent),
    # and a task run of the flow whose end the run did not record
    # when the run ends with the server answering again
    sft_id, helper_id = pipeline(str(tmp_path), helper_too=True)
    # then the stage's task run shows how it ended, not Running, saying it was set late
    state = _server_state(sft_id)
    assert state.is_completed(), state
    assert task_run_states.MISSED in state.message
    out = capsys.readouterr().out
    assert "missed the end of task runs while it was lost; set now: sft Completed" in out
    # and the other is named in one line, left as the server shows it
    assert "does not know how they ended): helper-" in out and helper_id in out
    assert not _server_state(helper_id).is_final()


@pytest.mark.parametrize(
    "lost, said",
    [
        ("refused", "(ConnectError: [Errno 111] Connection refused)"),
        ("hung", "(no answer to /health within 5 s)"),
    ],
)
def test_a_server_still_lost_at_the_end_gets_the_stages_named(
    prefect_harness, ends_unheard, settle_client, tmp_path, capsys, monkeypatch, lost, said
):
    # given a run whose stage ended while Prefect's server was lost, still lost at its end
    if lost == "refused":
        settle_client.refuse = True
    else:  # asked first: a server that hangs would hold the run's end for minutes
        monkeypatch.setattr(outages, "prefect_api_url", lambda: "http://127.0.0.1:9/api")
        monkeypatch.setattr(outages, "server_answers", lambda url, timeout: False)
    # when the run ends
    (sft_id,) = pipeline(str(tmp_path))
    # then one line says which task runs may stay Running in the UI
    out = capsys.readouterr().out
    assert f"does not answer at the run's end {said}" in out
    assert f"this run's stages: sft ({sft_id})" in out
    assert not _server_state(sft_id).is_final()


def test_a_run_that_saw_no_outage_asks_prefect_nothing_at_its_end(
    prefect_harness, ends_unheard, settle_client, tmp_path, capsys
):
    # given a run whose stage's end the server missed, the process never finding it lost
    # when the run ends
    (sft_id,) = pipeline(str(tmp_path), lost=False)
    # then no Prefect client was asked for (one comparison: no read of its task runs)
    assert settle_client.calls == []
    assert not _server_state(sft_id).is_final()
    assert "missed the end" not in capsys.readouterr().out
