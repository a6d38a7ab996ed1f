"""The Dataset section of a dataset run's report.md (tasks/dataset_report.py)."""

import json

from instructflow.tasks.dataset import load_dataset
from instructflow.tasks.dataset_report import dataset_markdown
from tests.own_data import dataset_run_result, write_hh_dataset, write_kwise_dataset


def test_the_dataset_section_reads_the_same_from_report_json_as_from_the_run(tmp_path):
    # given a K-wise dataset run's result, as the pipeline holds it (K counts keyed by int)
    summary = load_dataset(write_kwise_dataset(tmp_path / "mine")).summary
    result = dataset_run_result(summary, "held-out judge")
    saved = json.loads(json.dumps(result))  # report.json: every key a string
    assert saved["dataset"]["k_counts"] != summary["k_counts"]
    # when the section is rendered from each (the pipeline's, then eval import's report.md)
    # then both say the same, K counts as the pipeline has always written them
    assert dataset_markdown(saved) == dataset_markdown(result)
    counts = ", ".join(f"{k}: {n}" for k, n in summary["k_counts"].items())
    assert f", K counts {{{counts}}}\n" in dataset_markdown(result)


def test_pairs_left_out_for_no_shared_prompt_are_counted_for_conversations_only(tmp_path):
    # given a dataset of K-wise rankings (text) and one of conversation pairs
    kwise = load_dataset(write_kwise_dataset(tmp_path / "kwise")).summary
    talks = load_dataset(write_hh_dataset(tmp_path / "talks")).summary
    assert (kwise["preference_shape"], talks["preference_shape"]) == ("ranking", "conversation")
    # then the rankings' section says nothing of conversation pairs, the conversations' counts them
    section = dataset_markdown(dataset_run_result(kwise, "held-out judge"))
    assert "conversation pairs" not in section
    section = dataset_markdown(dataset_run_result(talks, "held-out judge"))
    assert f", {talks['no_shared_prefix']} conversation pairs without a shared prompt" in section


def test_the_first_pairs_left_out_are_named_by_row():
    from instructflow.tasks.dataset_report import left_out_rows

    summary = {"tables": {"preferences": {"file": "prefs.jsonl"}}, "no_shared_prefix": 1}
    assert left_out_rows(summary | {"no_shared_prefix_rows": [7]}) == "; row 7 of prefs.jsonl"
    summary |= {"no_shared_prefix": 9, "no_shared_prefix_rows": [2, 3]}
    assert left_out_rows(summary) == "; rows 2, 3, ... of prefs.jsonl"
    assert left_out_rows({"no_shared_prefix": 0}) == ""


def test_rows_longer_than_the_context_are_said_in_words(tmp_path):
    from instructflow.tasks.dataset_report import overlong_text

    # given a run whose policy refused long rows (so none were left), and one that dropped
    # and truncated some
    assert overlong_text({"policy": "refuse"}) == "none (dataset.overlong: refuse)"
    cut = {"policy": "truncate", "preferences.jsonl": {"dropped": 1, "truncated": 2},
           "prompts.jsonl": {}}  # fmt: skip
    # then each file's rows are counted by what became of them, the policy beside them,
    # not the summary's dict printed as Python
    assert overlong_text(cut) == (
        "preferences.jsonl 1 dropped, 2 truncated (dataset.overlong: truncate)"
    )
    # and with the rows known, they are named (the first few; '...' when there were more)
    rows = {"preferences.jsonl": {"dropped": [7], "truncated": [2, 3]}}
    assert overlong_text(cut, rows) == (
        "preferences.jsonl 1 dropped (row 7), 2 truncated (rows 2, 3) (dataset.overlong: truncate)"
    )
    cut["preferences.jsonl"]["truncated"] = 9
    assert "9 truncated (rows 2, 3, ...)" in overlong_text(cut, rows)
    summary = load_dataset(write_kwise_dataset(tmp_path / "mine")).summary
    section = dataset_markdown(dataset_run_result(summary, "held-out judge"))
    assert "- rows longer than the context: none (dataset.overlong: refuse)" in section
    assert "{'policy'" not in section


def test_rows_per_split_are_said_in_words(tmp_path):
    from instructflow.tasks.dataset_report import split_counts_text

    # given a dataset's rows per split of each table
    counts = {"preferences": {"train": 40, "valid": 5, "test": 6}, "prompts": {"train": 9}}
    # then they read as words, a table at a time, not as the summary's nested dict
    assert split_counts_text(counts) == ("preferences 40 train, 5 valid, 6 test; prompts 9 train")
    # and each table's splits in the order train, valid, test, whatever order rows met them
    mixed = {"prompts": {"test": 15, "train": 94, "valid": 11}}
    assert split_counts_text(mixed) == "prompts 94 train, 11 valid, 15 test"
    summary = load_dataset(write_kwise_dataset(tmp_path / "mine")).summary
    section = dataset_markdown(dataset_run_result(summary, "held-out judge"))
    line = next(line for line in section.splitlines() if line.startswith("- splits by "))
    assert "{" not in line and split_counts_text(summary["split_counts"]) in line


def test_a_run_says_before_training_which_valid_rows_it_leaves_out():
    from instructflow.flows.own_data_checks import notes_to_say

    summary = {
        "tables": {"preferences": {"file": "p.jsonl"}},
        "no_shared_prefix": 2,
        "no_shared_prefix_rows": [3, 8],
        "overlong": {"policy": "drop", "p.jsonl": {"dropped": 1}},
        "overlong_rows": {"p.jsonl": {"dropped": [5]}},
    }
    assert notes_to_say(summary) == [
        "left out: 2 conversation pairs whose sides differ before the last turn"
        " (no shared prompt; rows 3, 8 of p.jsonl)",
        "rows longer than the context: p.jsonl 1 dropped (row 5) (dataset.overlong: drop)",
    ]
    # and a dataset that leaves nothing out adds no line
    assert notes_to_say({"overlong": {"policy": "refuse"}}) == []
    one = {"tables": {"preferences": {"file": "p.jsonl"}}, "no_shared_prefix": 1,
           "no_shared_prefix_rows": [4]}  # fmt: skip
    assert notes_to_say(one) == [
        "left out: 1 conversation pair whose sides differ before the last turn"
        " (no shared prompt; row 4 of p.jsonl)"
    ]
