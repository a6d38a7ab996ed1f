"""`instructflow eval export` of a run on a user's conversations: people read the turns.

The run is built as the pipeline leaves one on a dataset imported with a
chat template (its evaluation rows: the rendered prompt the policies got and
the readable turns); export writes the turns, and the filled file imports.
"""

import csv
import json

from instructflow.flows.cli import main
from tests.human_eval_runs import parent_run_with_responses, write_report

POLICIES = ("sft", "ppo")
PROMPTS = 6


def _rendered(i: int) -> str:
    return (
        "<|im_start|>system\nbe nice<|im_end|>\n"
        f"<|im_start|>user\nname an animal ({i})<|im_end|>\n<|im_start|>assistant\n"
    )


def _rows(policy: str) -> list[dict]:
    return [
        {
            "prompt_id": f"p{i}",
            "sample": s,
            "prompt": _rendered(i),
            "response": f"{policy} otter {i}",
            "readable_prompt": f"system: be nice\n\nuser: name an animal ({i})",
        }
        for i in range(PROMPTS)
        for s in range(2)
    ]


def _finished_run(tmp_path, monkeypatch) -> tuple:
    with parent_run_with_responses(tmp_path, monkeypatch, _rows, POLICIES) as run_id:
        pass
    write_report(tmp_path, run_id, gate=None)
    return tmp_path, run_id


def test_export_shows_the_turns_and_the_filled_file_imports(prefect_harness, tmp_path, monkeypatch):
    root, run_id = _finished_run(tmp_path, monkeypatch)
    assert main(["eval", "export", "latest", "--n", "5"]) == 0
    folder = root / "reports" / run_id / "human_eval"
    items = [json.loads(line) for line in (folder / "labeling.jsonl").read_text().splitlines()]
    assert [item["prompt"] for item in items] == [
        f"system: be nice\n\nuser: name an animal ({i})" for i in range(5)
    ]
    for name in ("labeling.jsonl", "labeling.csv"):
        text = (folder / name).read_text()
        assert "<|im_start|>" not in text and "<|im_end|>" not in text

    # people rank ppo first everywhere: the file they filled imports
    path = folder / "labeling.csv"
    rows = list(csv.DictReader(path.open(newline="")))
    for row in rows:
        first = row["response"].startswith("ppo")
        row["rank"], row["likert"] = ("1", "6") if first else ("2", "3")
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert main(["eval", "import", run_id, str(path)]) == 0
    human = json.loads((root / "reports" / "latest" / "report.json").read_text())["human_eval"]
    assert human["items"] == 5
    assert human["policies"]["ppo"]["win_rate_vs_sft"]["mean"] == 1.0
    assert human["policies"]["sft"]["likert"]["mean"] == 3.0
