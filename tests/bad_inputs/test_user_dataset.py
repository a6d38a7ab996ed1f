"""Bad user datasets (`--data DIR`, instructflow.tasks.dataset): a few cases of the catalogue.

The dataset loader's own tests (tests/tasks/test_dataset.py) cover its
shapes and checks in depth; these keep the catalogue's promise for this kind
of input too: file, row and field named, nothing else started.
"""

import json

import pandas as pd
import pytest

from instructflow.tasks.dataset import load_dataset
from instructflow.tasks.tables import TableError
from tests.bad_inputs.conftest import assert_names, edit_row
from tests.own_data import write_kwise_dataset, write_pairwise_dataset


def problems_of(folder) -> list:
    with pytest.raises(TableError) as caught:
        load_dataset(folder)
    return caught.value.problems


def test_a_ranking_that_repeats_an_index_is_named(tmp_path):
    folder = write_kwise_dataset(tmp_path / "d")
    edit_row(folder / "preferences.jsonl", 4, ranking=[0, 0, 1, 2])
    assert_names(problems_of(folder), folder / "preferences.jsonl", 4, "ranking")


def test_a_dataset_without_preferences_is_named(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "prompts.jsonl").write_text(json.dumps({"prompt": "hi"}) + "\n")
    assert_names(problems_of(folder), folder, 0, "preferences", "no preferences")


def test_a_rejected_answer_equal_to_the_chosen_one_is_named(tmp_path):
    folder = write_pairwise_dataset(tmp_path / "d")
    rows = [json.loads(line) for line in (folder / "preferences.jsonl").read_text().splitlines()]
    edit_row(folder / "preferences.jsonl", 2, rejected=rows[1]["chosen"])
    assert_names(problems_of(folder), folder / "preferences.jsonl", 2, "rejected")


def test_a_last_line_cut_off_is_named_as_cut_off(tmp_path):
    # given a preferences file whose writer or download stopped inside its last row
    folder = write_pairwise_dataset(tmp_path / "d")
    path = folder / "preferences.jsonl"
    data = path.read_bytes()
    path.write_bytes(data[: data.rindex(b'"rejected": "') + len('"rejected": "It')])
    last = len(path.read_bytes().splitlines())
    # then that row is named, json's message reads as a sentence, and the cut is suggested
    (problem,) = problems_of(folder)
    assert (problem.file, problem.row, problem.field) == (str(path), last, "<line>")
    assert "Unterminated string starting at column " in problem.message
    assert "cut off" in problem.message


def test_a_malformed_row_with_its_line_break_is_not_called_cut_off(tmp_path):
    # given a broken row in the middle of a file, and one at its end that a line break ends
    folder = write_pairwise_dataset(tmp_path / "d")
    path = folder / "preferences.jsonl"
    lines = path.read_text().splitlines()
    lines[3], lines[-1] = lines[3][:-5], lines[-1][:-5]
    path.write_text("\n".join(lines) + "\n")
    # then both are named malformed, and neither is said to be cut off
    problems = problems_of(folder)
    assert [p.row for p in problems] == [4, len(lines)]
    assert all("malformed JSON" in p.message and "cut off" not in p.message for p in problems)


def test_conversations_saved_as_json_text_are_refused_not_trained_on_as_text(tmp_path):
    # given conversational preferences whose message lists went through json.dumps before
    # the Parquet file was written (string columns), and one JSONL row of a prompts table so
    folder = tmp_path / "d"
    folder.mkdir()
    turn = [{"role": "user", "content": "Name a fruit."}]
    rows = [
        {
            "prompt": json.dumps(turn),
            "chosen": json.dumps([{"role": "assistant", "content": f"Apple {i}."}]),
            "rejected": json.dumps([{"role": "assistant", "content": f"A car {i}."}]),
        }
        for i in range(40)
    ]
    pd.DataFrame(rows).to_parquet(folder / "preferences.parquet")
    prompts = [{"prompt": f"Say {i}."} for i in range(40)]
    prompts[6]["prompt"] = json.dumps(turn)
    (folder / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))
    # then each column written so is named once, and the one row by its number
    problems = problems_of(folder)
    parquet, jsonl = folder / "preferences.parquet", folder / "prompts.jsonl"
    for field in ("prompt", "chosen", "rejected"):
        assert_names(problems, parquet, 0, field, "conversation as JSON text")
    assert_names(problems, jsonl, 7, "prompt", "conversation as JSON text")
    assert len(problems) == 4


def test_text_that_merely_looks_like_json_is_text(tmp_path):
    # given answers that are JSON, but not conversations (a list of numbers, an object)
    folder = write_pairwise_dataset(tmp_path / "d")
    edit_row(folder / "preferences.jsonl", 3, chosen="[1, 2, 3]", rejected='{"a": 1}')
    # then they load as the text they are
    assert load_dataset(folder)


def test_a_table_passed_for_its_dataset_names_the_folder_to_pass(tmp_path):
    # given `--data mydata/preferences.jsonl`: one table, where the run reads a folder
    folder = write_pairwise_dataset(tmp_path / "d")
    table = folder / "preferences.jsonl"
    # then the refusal says a dataset is that file's folder, not only "not a directory"
    (problem,) = problems_of(table)
    assert (problem.file, problem.field) == (str(table), "data")
    assert problem.message == (
        f"not a directory: a dataset is the folder of its tables ({folder}), one file each"
    )


def test_a_bad_category_says_what_the_column_is_for(tmp_path):
    # given a number and an empty text as categories (a Hub label id, a blank export cell)
    folder = write_pairwise_dataset(tmp_path / "d")
    edit_row(folder / "preferences.jsonl", 2, category=2.5)
    edit_row(folder / "preferences.jsonl", 3, category=" ")
    problems = problems_of(folder)
    # then each names the row and says what a category is and that null means none
    # (it said only "must be a string" and "empty after stripping whitespace")
    path = folder / "preferences.jsonl"
    assert_names(problems, path, 2, "category", "naming the prompt's task family")
    assert_names(problems, path, 2, "category", "base_fewshot's prefix")
    assert_names(problems, path, 3, "category", "is empty: name the prompt's task family")
    assert all("null for none" in p.message for p in problems if p.field == "category")
