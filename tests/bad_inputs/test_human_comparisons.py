"""Bad human comparisons (`comparisons.human_comparisons`): refused before any training."""

import pytest

from instructflow.tasks.tables import LINE
from instructflow.world import layout
from tests.bad_inputs.conftest import (
    assert_names,
    edit_row,
    read_rows,
    refusal,
    write_rows,
)


def with_human(params, path):
    return params(comparisons={"human_comparisons": str(path)})


def keep_split(path, split):
    write_rows(path, [r for r in read_rows(path) if r["split"] == split])


CASES = [
    (
        "ranking-repeats",
        lambda p, w: edit_row(p, 2, ranking=[0, 0, 1, 2]),
        2,
        "ranking",
        "permutation",
    ),
    (
        "k-too-small",
        lambda p, w: edit_row(p, 1, responses=["a", "b", "c"], ranking=[0, 1, 2]),
        1,
        "responses",
        "4 to 9",
    ),
    (
        "mixed-k",
        lambda p, w: edit_row(p, 3, responses=["a", "b", "c", "d", "e"], ranking=[4, 3, 2, 1, 0]),
        3,
        "responses",
        "one k",
    ),
    (
        "duplicate-id",
        lambda p, w: edit_row(p, 2, comparison_id="human-0"),
        2,
        "comparison_id",
        "duplicate",
    ),
    ("no-valid-rows", lambda p, w: keep_split(p, "train"), 0, "split", "'valid'"),
    ("no-train-rows", lambda p, w: keep_split(p, "valid"), 0, "split", "'train'"),
    ("test-split", lambda p, w: edit_row(p, 4, split="test"), 4, "split", "held-out"),
    (
        "test-user",
        lambda p, w: edit_row(p, 5, user_id=read_rows(w / layout.EVAL_TEST)[0]["user_id"]),
        5,
        "user_id",
        "split",
    ),
    (
        "response-too-long",
        lambda p, w: edit_row(p, 2, responses=["x " * 300, "a", "b", "c"]),
        2,
        "responses",
        "context",
    ),
    ("empty-file", lambda p, w: p.write_text(""), 0, LINE, "empty"),
    (
        "ranking-of-strings",
        lambda p, w: edit_row(p, 6, ranking=["0", "1", "2", "3"]),
        6,
        "ranking",
        "integers",
    ),
]


@pytest.mark.parametrize(
    ("breaking", "row", "field", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_human_comparisons_are_refused_naming_file_row_and_field(
    smoke_dir, human_file, params, breaking, row, field, words
):
    # given valid human comparisons with one thing broken
    breaking(human_file, smoke_dir)
    # then checking the run's inputs names it
    assert_names(refusal(with_human(params, human_file), smoke_dir), human_file, row, field, words)


def test_a_missing_human_comparisons_file_is_named(smoke_dir, params, tmp_path):
    missing = tmp_path / "nowhere.jsonl"
    problems = refusal(with_human(params, missing), smoke_dir)
    assert_names(problems, missing, 0, "comparisons.human_comparisons", "not found")


def test_good_human_comparisons_pass(smoke_dir, human_file, params):
    from instructflow.tasks.preflight import check_inputs

    check_inputs(with_human(params, human_file), smoke_dir)
