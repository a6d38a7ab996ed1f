"""Bad user datasets (`--data DIR`, instructflow.tasks.dataset): a few cases of the catalogue.

The dataset loader's own tests (tests/tasks/test_dataset.py) cover its
shapes and checks in depth; these keep the catalogue's promise for this kind
of input too: file, row and field named, nothing else started.
"""

import json

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
