"""`instructflow run` says so when Prefect has not started the flow run after a while (a busy
server's database), instead of sitting silent (tasks/flow_start_watch.py)."""

import time

import pytest

from instructflow.flows.params import PipelineParams
from instructflow.tasks import flow_start_watch, outages


@pytest.fixture
def api(monkeypatch):
    monkeypatch.setattr(outages, "prefect_api_url", lambda: "http://127.0.0.1:4200/api")


def test_a_flow_not_started_in_time_is_said_once(api, capsys):
    with flow_start_watch.said_if_slow(0.05):
        time.sleep(0.4)  # the flow's first line has not run: Prefect still asking
    err = capsys.readouterr().err
    assert err.count("has not started the flow run") == 1
    assert err.startswith(
        "instructflow: Prefect's API (http://127.0.0.1:4200/api) has not started the flow run"
        " after 0 s: the server is busy"
    )


def test_a_flow_started_in_time_says_nothing(api, capsys):
    with flow_start_watch.said_if_slow(0.2):
        flow_start_watch.flow_started()
        time.sleep(0.4)
    time.sleep(0.1)
    assert capsys.readouterr().err == ""


def test_nothing_is_said_after_the_flow_call_returned(api, capsys):
    with flow_start_watch.said_if_slow(0.2):
        pass  # the flow ended (failed before its first line, say) before the timer
    time.sleep(0.4)
    assert capsys.readouterr().err == ""


def test_the_pipeline_flows_first_line_ends_the_wait(tmp_path, monkeypatch, prefect_harness):
    from instructflow.flows.pipeline import rlhf_pipeline

    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with flow_start_watch.said_if_slow(600):
        # a run refused at its start (no such dataset folder): the flow's body ran
        state = rlhf_pipeline(
            PipelineParams(profile="smoke", data=str(tmp_path / "none")), return_state=True
        )
        assert state.is_failed()
        assert flow_start_watch._started.is_set()
