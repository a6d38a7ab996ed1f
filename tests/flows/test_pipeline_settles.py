"""The pipeline's end reads its task runs back after an outage, however it ends (here a
refusal on the own-data path), and only after one (tasks/task_run_states.py)."""

import pytest

from instructflow.flows.params import PipelineParams
from instructflow.tasks import outages, task_run_states
from tests.tiny_models import tiny_llama


@pytest.mark.parametrize("lost", [True, False])
def test_the_pipelines_end_reads_its_task_runs_back_only_after_an_outage(
    prefect_harness, tmp_path, monkeypatch, lost
):
    from instructflow.flows.pipeline import rlhf_pipeline

    # given a run whose process found Prefect's API lost (or not), refused on its data
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    monkeypatch.setattr(outages, "prefect_api_lost_since", lambda since: lost)
    read = []

    def set_unfinished(flow_run_id, ended):
        read.append(str(flow_run_id))
        return [], []

    monkeypatch.setattr(task_run_states, "_set_unfinished", set_unfinished)
    llama = tiny_llama(tmp_path / "llama", ["hello there, how are you today"] * 20)
    params = PipelineParams(profile="smoke", data=str(tmp_path / "none"), base_model=str(llama))
    # when it ends
    state = rlhf_pipeline(params, return_state=True)
    # then its flow run's task runs were read back once, after an outage only
    assert state.is_failed()
    assert read == ([str(state.state_details.flow_run_id)] if lost else [])
