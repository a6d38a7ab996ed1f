"""What a dataset directory holds but a run does not read is listed where its user looks:
`data validate`, the run's log (before any flow starts) and report.md."""

from instructflow.flows.cli import main
from instructflow.tasks.dataset import load_dataset
from instructflow.tasks.tables import Problem, TableError
from tests.own_data import dataset_run_result
from tests.tasks.test_dataset_names import write_misnamed_dataset
from tests.tiny_models import tiny_llama

LISTED = [
    "ignored columns: preferences.jsonl: Split, notes, userId",
    "files not read (not a table): README.md, demonstration.jsonl, prompts.json",
    "warning: preferences.jsonl: column 'Split' is ignored: did you mean 'split'?",
    "warning: preferences.jsonl: column 'userId' is ignored: did you mean 'user_id'?",
    "warning: demonstration.jsonl is not read: did you mean demonstrations.jsonl?",
    "warning: prompts.json is not read: did you mean prompts.jsonl?",
]


def test_data_validate_lists_what_it_does_not_read(tmp_path, capsys):
    # given a directory with misspelled columns and table files
    folder = write_misnamed_dataset(tmp_path / "mine")
    # when it is validated
    assert main(["data", "validate", str(folder)]) == 0
    # then it is valid, and says what it ignored and what it probably meant
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if line in LISTED] == LISTED
    assert out[-1].startswith(f"{folder}: valid")


def test_a_run_lists_what_it_does_not_read_before_its_flow_starts(tmp_path, monkeypatch, capsys):
    from instructflow.flows import pipeline
    from instructflow.tasks import temporary_server

    # given the same directory, a tiny model, and a flow that stops as soon as it is called
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    folder = write_misnamed_dataset(tmp_path / "mine")
    llama = tiny_llama(tmp_path / "llama", [(folder / "preferences.jsonl").read_text()])

    def flow_not_run(*args, **kwargs):
        raise TableError([Problem("flow", 0, "<line>", "the test stops here")])

    monkeypatch.setattr(pipeline, "rlhf_pipeline", flow_not_run)
    monkeypatch.setattr(temporary_server, "prepare", lambda: None)
    # when a run on it starts
    assert main(["run", "--data", str(folder), "--base-model", str(llama)]) == 2
    # then its log lists them, before the flow was called
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if line.removeprefix("instructflow: ") in LISTED] == [
        f"instructflow: {line}" for line in LISTED
    ]
    assert err.index(f"instructflow: {LISTED[-1]}") < err.index(
        "flow field '<line>': the test stops here"
    )


def test_report_md_lists_what_the_run_did_not_read(tmp_path):
    from instructflow.tasks.dataset_report import dataset_markdown

    summary = load_dataset(write_misnamed_dataset(tmp_path / "mine")).summary
    result = dataset_run_result(summary)
    markdown = dataset_markdown(result).splitlines()
    assert [line for line in markdown if line.removeprefix("- ") in LISTED] == [
        f"- {line}" for line in LISTED
    ]
