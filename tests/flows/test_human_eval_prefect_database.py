"""`eval import` starts Prefect's temporary server only where its database may hold the run."""

import json

import pytest
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

from instructflow.flows.cli import main
from tests.flows.test_human_eval_round_trip import _rank_first
from tests.human_eval_runs import parent_run_with_responses, write_report

POLICIES = ("sft", "ppo")
FLOW_RUN_ID = "6a1a7b0e-0000-4000-8000-000000000000"


def _rows_of(policy: str) -> list[dict]:
    return [
        {"prompt_id": f"p{i}", "sample": 0, "prompt": f"prompt {i}", "response": f"{policy} {i}"}
        for i in range(6)
    ]


@pytest.fixture
def no_prefect_server(tmp_path, monkeypatch):
    """No PREFECT_API_URL (a run's temporary server), PREFECT_HOME a folder of its own; the
    starts of Prefect's temporary server, counted (and made: none is needed to count)."""
    started = []
    monkeypatch.setattr(SubprocessASGIServer, "start", lambda server, *a, **k: started.append(1))
    with temporary_settings(
        updates={PREFECT_HOME: str(tmp_path / "prefect-home")}, restore_defaults={PREFECT_API_URL}
    ):
        yield started


def test_eval_import_starts_no_server_for_a_flow_run_no_database_here_holds(
    tmp_path, monkeypatch, capsys, no_prefect_server
):
    # given a finished run whose Prefect flow run is in no database here (made against
    # another server, or another PREFECT_HOME), exported and ranked by people
    with parent_run_with_responses(tmp_path, monkeypatch, _rows_of, POLICIES) as run_id:
        pass
    write_report(tmp_path, run_id, None)
    for folder in (tmp_path / "reports" / run_id, tmp_path / "reports" / "latest"):
        report = json.loads((folder / "report.json").read_text())
        report["run"]["prefect_flow_run_id"] = FLOW_RUN_ID
        (folder / "report.json").write_text(json.dumps(report))
    assert main(["eval", "export", run_id, "--n", "4"]) == 0
    filled = tmp_path / "reports" / run_id / "human_eval" / "labeling.csv"
    _rank_first(filled, "ppo")
    # when people's rankings are imported
    assert main(["eval", "import", run_id, str(filled)]) == 0
    # then no Prefect server was started to look for the flow run (a new database's
    # migrations, for nothing), and one line says the artifacts keep the automatic verdict
    assert no_prefect_server == []
    out = capsys.readouterr().out
    assert "still show the automatic verdict" in out
    assert f"flow run {FLOW_RUN_ID} is not in this Prefect database" in out
