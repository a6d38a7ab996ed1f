"""The report's status and reports/latest: moved only by a completed run; a failed run's report says where it stopped."""

import json
from pathlib import Path

import pytest

from instructflow.tasks import report, run_status


@pytest.fixture
def reports(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(tmp_path))
    return tmp_path / "reports"


def _run(run_id: str) -> dict:
    return {"mlflow_run_id": run_id, "profile": "smoke", "seed": 0}


def _evaluated(reports: Path, run_id: str) -> Path:
    result = report.empty_report(_run(run_id)) | {"status": "evaluated"}
    return report.write_report(result, reports, "# evaluated\n")


GATE = {
    "model_name": "instructflow-policy",
    "policy_version": "3",
    "incumbent": "sft",
    "evidence": "labelers",
    "prompts": 60,
    "win_rate": {"mean": 0.52, "ci95": [0.45, 0.6]},
    "promoted": False,
    "reason": "CI includes 0.5",
}


def test_latest_moves_only_when_a_run_completes(reports):
    # given a completed run
    first = _evaluated(reports, "run-a")
    assert not (reports / "latest").exists()  # evaluated is not completed
    result = json.loads((first / "report.json").read_text()) | {"gate": GATE}
    run_status.complete(result, first, lambda r: report.to_markdown(r))
    latest = json.loads((reports / "latest" / "report.json").read_text())
    assert latest["run"]["mlflow_run_id"] == "run-a" and latest["status"] == "completed"
    assert latest["gate"] == GATE
    assert "Status: **completed**" in (reports / "latest" / "report.md").read_text()
    # when a second run is evaluated but never completes
    _evaluated(reports, "run-b")
    # then latest still shows the first
    assert (
        json.loads((reports / "latest" / "report.json").read_text())["run"]["mlflow_run_id"]
        == "run-a"
    )


def test_a_failed_run_reports_the_stage_where_it_stopped(reports):
    @run_status.failure_report
    def pipeline():
        run_status.begin(_run("run-c"), {"threads": 2, "interop_threads": 1})
        run_status.at_stage("evaluation")
        _evaluated(reports, "run-c")
        run_status.at_stage("registry")
        raise RuntimeError("registry unreachable")

    with pytest.raises(RuntimeError):
        pipeline()
    failed = json.loads((reports / "run-c" / "report.json").read_text())
    assert failed["status"] == "failed" and failed["stopped_at_stage"] == "registry"
    assert "registry unreachable" in failed["error"]
    assert failed["provenance"] == {"threads": 2, "interop_threads": 1}  # where it ran, too
    assert not (reports / "latest").exists()


def test_an_interrupted_run_says_so(reports):
    @run_status.failure_report
    def pipeline():
        run_status.begin(_run("run-d"))
        run_status.at_stage("sft")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pipeline()
    stopped = json.loads((reports / "run-d" / "report.json").read_text())
    assert (stopped["status"], stopped["stopped_at_stage"]) == ("interrupted", "sft")


def test_world_version_comes_from_the_data_manifest(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"world_version": "2", "seed": 0}))
    assert run_status.data_version(tmp_path) == {"world_version": "2"}
    assert run_status.data_version(tmp_path / "missing") == {}


def test_a_cancel_from_prefect_reads_as_interrupted_with_its_reason(reports, tmp_path, monkeypatch):
    # Prefect turns a cancel (UI, CLI, worker stopping) into SIGTERM, then TerminationSignal
    # without text: the report said status "failed", error "TerminationSignal:".
    from mlflow import MlflowClient
    from prefect.exceptions import TerminationSignal

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = MlflowClient().create_run(MlflowClient().create_experiment("e")).info.run_id

    @run_status.failure_report
    def pipeline():
        run_status.begin(_run(run_id))
        run_status.at_stage("reward_model")
        raise TerminationSignal(signal=15)

    with pytest.raises(TerminationSignal):
        pipeline()
    stopped = json.loads((reports / run_id / "report.json").read_text())
    assert (stopped["status"], stopped["stopped_at_stage"]) == ("interrupted", "reward_model")
    assert stopped["error"] == f"TerminationSignal: {run_status.SIGTERM_TEXT}"
    # the MLflow parent run says why too (MLflow itself keeps only KILLED)
    tags = MlflowClient().get_run(run_id).data.tags
    assert tags["failure_reason"] == stopped["error"]
    assert tags["mlflow.note.content"].startswith("interrupted at stage reward_model: ")


def test_a_worker_runs_stop_on_sigterm_reads_as_a_cancel(monkeypatch):
    # a worker's run stops its training loop on SIGTERM (tasks/interrupts.reclaim): the
    # loop's message says where it stopped, the report also why
    import signal

    from instructflow.models.checkpoints import TrainingInterrupted
    from instructflow.tasks import interrupts

    stopped = TrainingInterrupted("stopped after step 67; checkpoint at step 67 kept")
    monkeypatch.setattr(interrupts, "received", [signal.SIGTERM])
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", "a-flow-run")
    assert run_status.error_text(stopped) == (
        f"TrainingInterrupted: stopped after step 67; checkpoint at step 67 kept; "
        f"{run_status.SIGTERM_TEXT}"
    )
    # under `instructflow run` a SIGTERM is someone's kill, not Prefect's cancel
    monkeypatch.delenv("PREFECT__FLOW_RUN_ID")
    assert run_status.error_text(stopped).endswith("checkpoint at step 67 kept")


def test_a_command_line_runs_stop_on_a_cancel_reads_as_a_cancel(monkeypatch):
    # `instructflow run` against a Prefect server sends itself SIGTERM on a cancel
    # (worker_exit.stop_on_cancel): its report says so, not just "interrupted by SIGTERM"
    import signal

    from instructflow.tasks import interrupts

    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    monkeypatch.setattr(interrupts, "received", [signal.SIGTERM])
    monkeypatch.setattr(interrupts, "_cancel_seen", [])
    stopped = interrupts.RunInterrupted(signal.SIGTERM)
    assert run_status.error_text(stopped) == "RunInterrupted: interrupted by SIGTERM"
    interrupts.note_cancel()
    assert run_status.error_text(stopped) == (
        f"RunInterrupted: interrupted by SIGTERM; {run_status.SIGTERM_TEXT}"
    )


def test_a_worker_runs_flow_run_log_says_where_it_stopped_and_why(reports, monkeypatch):
    # Prefect's own lines for a cancel of a deployment's run read "Crash detected! Execution
    # was aborted by an interrupt signal."; where it stopped was in the report and MLflow only
    import prefect.logging
    from prefect.exceptions import TerminationSignal

    said = []
    logger = type("Logger", (), {"error": lambda self, *args: said.append(args[0] % args[1:])})
    monkeypatch.setattr(prefect.logging, "get_run_logger", lambda: logger())

    @run_status.failure_report
    def pipeline(run_id: str):
        run_status.begin(_run(run_id))
        run_status.at_stage("base_model")
        raise TerminationSignal(signal=15)

    # given a flow run a worker started (it sets PREFECT__FLOW_RUN_ID for the run's process)
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", "a-flow-run")
    with pytest.raises(TerminationSignal):
        pipeline("run-w")
    # then its log (the Prefect UI's) says what the report says, and where the report is
    assert said == [
        f"interrupted at stage base_model: TerminationSignal: {run_status.SIGTERM_TEXT} "
        f"(report: {reports / 'run-w' / 'report.json'})"
    ]
    # and a command-line run, which says it on its console, logs no such line
    monkeypatch.delenv("PREFECT__FLOW_RUN_ID")
    with pytest.raises(TerminationSignal):
        pipeline("run-x")
    assert len(said) == 1


def test_the_alarm_a_cancel_armed_is_off_once_the_flow_has_ended(reports, monkeypatch):
    # A worker's run keeps our handlers for the rest of its process: the alarm a SIGTERM arms
    # (its stop forced 8 s later) went off during Prefect's shutdown after a quick stop, the
    # process died of SIGALRM (exit code -14) and a cancelled flow run ended Crashed.
    import signal

    from instructflow.models.checkpoints import TrainingInterrupted
    from instructflow.tasks import interrupts

    monkeypatch.setattr(interrupts, "received", [])
    on_signal, _ = interrupts._handlers(grace=30)

    @run_status.failure_report
    def pipeline():
        run_status.begin(_run("run-a"))
        run_status.at_stage("evaluation")
        on_signal(signal.SIGTERM, None)  # the worker's SIGTERM: a stop request, alarm armed
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 0
        raise TrainingInterrupted("evaluation stopped after judging base")  # the stop, taken

    try:
        with pytest.raises(TrainingInterrupted):
            pipeline()
        # then, the flow over, no alarm is left to go off
        assert signal.getitimer(signal.ITIMER_REAL)[0] == 0
    finally:
        signal.alarm(0)
        interrupts.clear_stop()


def test_a_lost_service_reads_in_the_report_as_the_command_line_says_it():
    # a deployment run has no command line: its report said MLflow's raw exception
    from mlflow.exceptions import MlflowException

    lost = MlflowException(
        "API request to http://127.0.0.1:5071/api/2.0/mlflow/runs/update failed with exception "
        "HTTPConnectionPool(host='127.0.0.1', port=5071): Max retries exceeded with url: ..."
    )
    text = run_status.error_text(lost)
    assert text.startswith("MlflowException: lost a service mid-run (MLflow: ")
    assert "runs/update failed (Max retries exceeded)" in text
    assert text.endswith("run the same command again to resume.")


def test_a_workers_run_fails_with_the_lost_services_line_for_prefects_state(reports, monkeypatch):
    # Prefect's UI shows a failed flow run's exception as "Type: message": a deployment run
    # that lost MLflow showed MLflow's 400-character exception there
    from mlflow.exceptions import MlflowException

    from instructflow.tasks.outages import RunFault

    lost = MlflowException("API request to http://127.0.0.1:5071/x failed: Max retries exceeded")

    @run_status.failure_report
    def pipeline():
        run_status.begin(_run("run-lost"))
        raise lost

    with pytest.raises(MlflowException):  # the command line explains the original itself
        pipeline()
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", "a-flow-run")
    with pytest.raises(RunFault) as raised:
        pipeline()
    assert str(raised.value).startswith("lost a service mid-run (MLflow: ")
    assert raised.value.__cause__ is lost
    written = json.loads((reports / "run-lost" / "report.json").read_text())
    assert written["error"] == f"MlflowException: {raised.value}"

    @run_status.failure_report
    def buggy():
        raise ZeroDivisionError("division by zero")

    with pytest.raises(ZeroDivisionError):  # a bug keeps its own type and traceback
        buggy()


def test_an_error_text_keeps_its_message_and_names_a_bare_signal():
    assert run_status.error_text(RuntimeError(" disk full ")) == "RuntimeError: disk full"
    assert run_status.error_text(KeyboardInterrupt()).startswith(
        "KeyboardInterrupt: stopped by SIGINT"
    )
    assert len(run_status.error_text(ValueError("x" * 900))) == 500


def test_a_dataset_run_stopped_before_its_report_says_which_dataset_it_ran_on(reports):
    # given a run on a user's dataset, stopped in SFT (before any result was found)
    @run_status.failure_report
    def pipeline():
        run_status.begin(_run("run-own"))
        run_status.describe({"data_dir": "/data/mine", "dvc_data_md5": "untracked"})
        run_status.at_stage("sft")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pipeline()
    stopped = json.loads((reports / "run-own" / "report.json").read_text())
    # then its report names the dataset and its version, as a completed one does
    assert stopped["status"] == "interrupted" and stopped["stopped_at_stage"] == "sft"
    assert stopped["run"]["data_dir"] == "/data/mine"
    assert stopped["run"]["dvc_data_md5"] == "untracked"
    # and has no labelers block: a dataset has no simulated labelers (not an empty measurement)
    assert "labelers" not in stopped
