"""A cancel that lands after a run's last point to stop: the run completed, and says so."""

import json
import uuid

import pytest

from instructflow.tasks import late_cancel, worker_exit


def _state(kind, flow_run_id):
    from prefect import states

    state = getattr(states, kind)()
    state.state_details.flow_run_id = flow_run_id
    return state


@pytest.fixture
def latest(tmp_path, monkeypatch):
    """latest(report) writes reports/latest/report.json of a project root."""
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(tmp_path))

    def write(report: dict) -> None:
        folder = tmp_path / "reports" / "latest"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.json").write_text(json.dumps(report))

    return write


def test_a_cancelling_state_of_a_completed_run_gives_its_report(latest):
    this_run = uuid.uuid4()
    # no report yet: a run the cancel stopped before its first completed run
    assert late_cancel.completed_report(_state("Cancelling", this_run)) is None
    # reports/latest still the run before (latest moves only for a completed run)
    latest({"status": "completed", "run": {"prefect_flow_run_id": str(uuid.uuid4())}})
    assert late_cancel.completed_report(_state("Cancelling", this_run)) is None
    # this run's completed report: the run finished despite the cancel
    report = {"status": "completed", "run": {"prefect_flow_run_id": str(this_run)}}
    latest(report)
    assert late_cancel.completed_report(_state("Cancelling", this_run)) == report
    assert late_cancel.completed_report(_state("Cancelled", this_run)) == report
    # a state that is no cancel is left to state.result(), as before
    assert late_cancel.completed_report(_state("Completed", this_run)) is None
    assert late_cancel.completed_report(_state("Failed", this_run)) is None
    # and a report of this run that is not completed is no completed run
    latest({"status": "interrupted", "run": {"prefect_flow_run_id": str(this_run)}})
    assert late_cancel.completed_report(_state("Cancelling", this_run)) is None


def test_the_flow_run_ends_completed_and_the_cancel_marker_leaves_it(prefect_harness):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling, Running

    @flow
    def pipeline() -> None: ...

    with get_client(sync_client=True) as client:
        # given a flow run a cancel left Cancelling as the run completed
        flow_run = client.create_flow_run(pipeline, state=Running())
        client.set_flow_run_state(flow_run.id, Cancelling(), force=True)
        state = client.read_flow_run(flow_run.id).state
        # when the command line marks it, and then the cancel's marker process runs
        late_cancel.mark_completed(state)
        worker_exit._mark_cancelled(flow_run.id)
        after = client.read_flow_run(flow_run.id).state
    # then it reads Completed, saying why, not "cancelled: the run stopped on the SIGTERM"
    assert after.type.value == "COMPLETED" and after.message == late_cancel.MESSAGE


def test_instructflow_run_prints_the_run_and_exits_0_after_a_late_cancel(
    latest, tmp_path, monkeypatch, capsys
):
    from instructflow.flows import cli, cli_run, pipeline, run_checks
    from instructflow.tasks import temporary_server

    # given a run whose flow completed as a cancel arrived: Prefect's state is Cancelling
    flow_run_id = uuid.uuid4()
    report = {"status": "completed", "run": {"prefect_flow_run_id": str(flow_run_id)}}
    latest(report)
    (tmp_path / ".dvc").mkdir()

    class NoServer:
        def ready(self) -> None: ...

        def discard(self) -> None: ...

    marked = []
    monkeypatch.setattr(run_checks, "checked_params", lambda params: params)
    monkeypatch.setattr(temporary_server, "start_early", NoServer)
    state = _state("Cancelling", flow_run_id)
    monkeypatch.setattr(pipeline, "rlhf_pipeline", lambda params, return_state: state)
    monkeypatch.setattr(late_cancel, "mark_completed", marked.append)
    # when `instructflow run` reads its outcome
    status = cli_run._cmd_run(cli.build_parser().parse_args(["run", "--profile", "smoke"]))
    # then it exits 0 with the run's block, says why, and marks the flow run Completed
    out, err = capsys.readouterr()
    assert status == 0 and json.loads(out) == report["run"]
    assert late_cancel.MESSAGE in err and marked == [state]
