"""Bad tables of the world the pipeline reads: each refused before training, naming file, row, field."""

from pathlib import Path

import pytest

from instructflow.tasks.tables import LINE
from instructflow.world import layout
from tests.bad_inputs.conftest import DROP, assert_names, edit_row, read_rows, refusal, write_rows


def set_line(path: Path, row: int, raw: bytes) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[row - 1] = raw
    path.write_bytes(b"\n".join(lines))


def long_text(words: int = 400) -> str:
    return " ".join(["lorem"] * words)


# (id, table, how to break it, expected row, field, words in the message)
CASES = [
    (
        "missing-field",
        layout.SFT_TRAIN,
        lambda p: edit_row(p, 3, response=DROP),
        3,
        "response",
        "missing",
    ),
    (
        "empty-text",
        layout.SFT_TRAIN,
        lambda p: edit_row(p, 2, response="   "),
        2,
        "response",
        "empty",
    ),
    ("wrong-type", layout.RM_TRAIN, lambda p: edit_row(p, 5, prompt=42), 5, "prompt", "string"),
    (
        "unknown-split",
        layout.PPO_VALID,
        lambda p: edit_row(p, 1, split="dev"),
        1,
        "split",
        "one of",
    ),
    (
        "extra-field",
        layout.EVAL_TEST,
        lambda p: edit_row(p, 4, notes="x"),
        4,
        "notes",
        "unexpected",
    ),
    ("malformed-json", layout.SFT_VALID, lambda p: set_line(p, 2, b'{"prompt": '), 2, LINE, "json"),
    ("blank-line", layout.RM_VALID, lambda p: set_line(p, 2, b""), 2, LINE, "blank"),
    (
        "bad-utf8",
        layout.PPO_TRAIN,
        lambda p: set_line(p, 3, b'{"prompt": "caf\xe9"}'),
        3,
        "prompt",
        "utf-8",
    ),
    (
        "control-char",
        layout.SFT_TRAIN,
        lambda p: edit_row(p, 1, prompt="a\x07b"),
        1,
        "prompt",
        "control",
    ),
    (
        "duplicate-id",
        layout.PRETRAIN_TRAIN,
        lambda p: edit_row(p, 2, doc_id=read_rows(p)[0]["doc_id"]),
        2,
        "doc_id",
        "duplicate",
    ),
    (
        "answer-out-of-range",
        layout.PUBLIC_SUITE,
        lambda p: edit_row(p, 1, answer=99),
        1,
        "answer",
        "index",
    ),
    (
        "ranking-not-permutation",
        layout.LABELER_OVERLAP,
        lambda p: edit_row(p, 1, ranking=[0, 0, 1, 2]),
        1,
        "ranking",
        "permutation",
    ),
    (
        "mixture-missing-id",
        layout.FLAN_MIXTURE,
        lambda p: edit_row(p, 2, example_id=DROP),
        2,
        "example_id",
        "missing",
    ),
    ("empty-file", layout.T0_MIXTURE, lambda p: p.write_text(""), 0, LINE, "empty"),
    ("missing-file", layout.PPO_TRAIN, lambda p: p.unlink(), 0, LINE, "not found"),
    (
        "split-in-wrong-file",
        layout.SFT_TRAIN,
        lambda p: edit_row(p, 2, split="valid"),
        2,
        "split",
        "train file",
    ),
    (
        "prompt-too-long",
        layout.RM_TRAIN,
        lambda p: edit_row(p, 2, prompt=long_text()),
        2,
        "prompt",
        "context",
    ),
    (
        "response-too-long",
        layout.SFT_TRAIN,
        lambda p: edit_row(p, 3, response=long_text()),
        3,
        "response",
        "context",
    ),
    (
        "eval-prompt-too-long",
        layout.EVAL_TEST,
        lambda p: edit_row(p, 1, prompt=long_text(150)),
        1,
        "prompt",
        "context",
    ),
]


@pytest.mark.parametrize(
    ("table", "breaking", "row", "field", "words"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_a_bad_table_is_refused_naming_file_row_and_field(
    smoke_dir, params, table, breaking, row, field, words
):
    # given the smoke world with one thing broken in one table
    breaking(smoke_dir / table)
    # when the run's inputs are checked, then that thing is named
    assert_names(refusal(params(), smoke_dir), smoke_dir / table, row, field, words)


def test_a_user_in_two_splits_is_refused_naming_both_places(smoke_dir, params):
    # given a test user who also wrote a training demonstration (split left as train)
    test_user = read_rows(smoke_dir / layout.EVAL_TEST)[0]["user_id"]
    edit_row(smoke_dir / layout.SFT_TRAIN, 1, user_id=test_user)
    problems = refusal(params(), smoke_dir)
    # then the test table's row of that user is named, with the other place
    assert_names(problems, smoke_dir / layout.EVAL_TEST, 1, "user_id", "sft/train.jsonl row 1")


def test_every_problem_of_every_table_in_one_message(smoke_dir, params):
    # given two tables broken at once
    edit_row(smoke_dir / layout.SFT_TRAIN, 3, response=DROP)
    edit_row(smoke_dir / layout.PPO_VALID, 1, split="dev")
    from instructflow.tasks.preflight import check_inputs
    from instructflow.tasks.tables import TableError

    with pytest.raises(TableError) as caught:
        check_inputs(params(), smoke_dir)
    text = str(caught.value)
    # then one message lists both, each as "file row n field 'x'"
    assert f"{smoke_dir / layout.SFT_TRAIN} row 3 field 'response'" in text
    assert f"{smoke_dir / layout.PPO_VALID} row 1 field 'split'" in text
    assert "Traceback" not in text


def test_the_good_world_passes(smoke_dir, params):
    from instructflow.tasks.preflight import check_inputs

    check_inputs(params(), smoke_dir)  # no exception: the cases above fail for their one fault


def test_rows_rewritten_unchanged_still_pass(smoke_dir, params):
    # the case helpers themselves do not break a table (so a case's refusal is its fault's)
    path = smoke_dir / layout.SFT_TRAIN
    write_rows(path, read_rows(path))
    from instructflow.tasks.preflight import check_inputs

    check_inputs(params(), smoke_dir)


def test_a_new_prompt_without_a_gold_answer_is_refused_naming_its_row(smoke_dir, params):
    # given a new RM prompt appended to the world's table, valid in itself, but with no
    # row in the gold key (the labelers who rank its samples score them by that key)
    path = smoke_dir / layout.RM_TRAIN
    rows = read_rows(path)
    rows.append(rows[0] | {"prompt_id": "rm-new-000", "prompt": rows[0]["prompt"] + " please"})
    write_rows(path, rows)
    # then the run is refused before training, naming that row and its prompt_id
    problems = refusal(params(), smoke_dir)
    assert_names(problems, path, len(rows), "prompt_id", layout.GOLD_KEY)
