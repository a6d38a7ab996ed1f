"""A stage's end that a lost Prefect server missed is set at the flow's end, or named."""

import pytest
from prefect import flow, task
from prefect.client.orchestration import get_client

from instructflow.flows import stages
from instructflow.tasks import outages, run_status, task_run_states


@task(persist_result=False)
def stage(out_dir: str, parent_run_id: str) -> dict:
    return {"dir": out_dir, "parent": parent_run_id}


@flow(persist_result=False)
@run_status.failure_report
def pipeline(out_dir: str) -> str:
    state = stages._call(stage, "sft", False, None, out_dir, "parent", {})
    return str(state.state_details.task_run_id)


@pytest.fixture
def ends_unheard(monkeypatch):
    """Prefect's server lost as a stage ends: its task run's final state events never arrive
    (its events client gave them up), the earlier ones did."""
    import prefect.task_engine

    emit = prefect.task_engine.emit_task_run_state_change_event

    def emit_unless_final(task_run, initial_state, validated_state, **kwargs):
        if validated_state.is_final():
            return None
        return emit(task_run, initial_state, validated_state, **kwargs)

    monkeypatch.setattr(prefect.task_engine, "emit_task_run_state_change_event", emit_unless_final)
    monkeypatch.setattr(task_run_states, "RECORDING_SECONDS", 0.5)


def _server_state(task_run_id: str):
    with get_client(sync_client=True) as client:
        return client.read_task_run(task_run_id).state


def test_a_stage_end_the_server_missed_is_set_when_it_answers_again(
    prefect_harness, ends_unheard, tmp_path, capsys
):
    # given a run whose stage ended while Prefect's server was lost (its end never sent)
    # when the run ends with the server answering again
    task_run_id = pipeline(str(tmp_path))
    # then the stage's task run shows how it ended, not Running, and the run said so
    state = _server_state(task_run_id)
    assert state.is_completed(), state
    assert "missed the end of task runs while it was lost; set now: sft Completed" in (
        capsys.readouterr().out
    )


def test_a_server_still_lost_at_the_end_gets_the_stages_named(
    prefect_harness, ends_unheard, tmp_path, capsys, monkeypatch
):
    # given a run whose stage ended while Prefect's server was lost, still lost at its end
    monkeypatch.setattr(outages, "server_answers", lambda url, timeout=1.0: False)
    # when the run ends
    task_run_id = pipeline(str(tmp_path))
    # then one line says which task runs may stay Running in the UI
    out = capsys.readouterr().out
    assert "does not answer at the run's end" in out and f"sft ({task_run_id})" in out
    assert not _server_state(task_run_id).is_final()
