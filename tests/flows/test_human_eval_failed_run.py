"""`eval export` / `eval import` of a run that failed before its samples: one line, no traceback."""

import json

import pytest

from instructflow.flows.cli import main


@pytest.mark.parametrize("argv", [["eval", "export"], ["eval", "import"]])
def test_a_failed_run_has_no_samples_to_label_and_says_why(tmp_path, monkeypatch, argv):
    # given the report of a run that failed in its evaluation (it ended in MLflow's "Failed
    # to download artifacts from path 'evaluation'" traceback)
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(tmp_path))
    folder = tmp_path / "reports" / "abc"
    folder.mkdir(parents=True)
    report = {
        "run": {"mlflow_run_id": "abc"},
        "policies": {},
        "status": "failed",
        "stopped_at_stage": "evaluation",
        "error": "ValueError: example is 133 tokens, longer than max_len=128",
    }
    (folder / "report.json").write_text(json.dumps(report))
    filled = tmp_path / "filled.csv"
    filled.write_text("item_id,label,rank\n")
    # then the command stops with the reason
    with pytest.raises(SystemExit) as stopped:
        main([*argv, "abc", *([str(filled)] if argv[1] == "import" else [])])
    assert str(stopped.value) == (
        "instructflow: run abc failed at stage 'evaluation' (ValueError: example is 133 tokens,"
        " longer than max_len=128): it has no samples to label"
    )
