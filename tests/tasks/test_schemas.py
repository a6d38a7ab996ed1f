"""Every table is validated, and a bad one names file, row and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from instructflow.tasks import schemas
from instructflow.tasks.tables import (
    JSON_ARRAY,
    TableError,
    check_user_splits,
    load_table,
    read_jsonl,
    write_jsonl,
)


def prompt_row(i: int = 0, **over: Any) -> dict[str, Any]:
    row = {
        "prompt_id": f"p{i}",
        "user_id": f"u{i}",
        "split": "train",
        "family": "qa",
        "prompt": f"What is {i} + {i}?",
    }
    return {**row, **over}


def demo_row(i: int = 0, **over: Any) -> dict[str, Any]:
    return {**prompt_row(i), "response": f"It is {2 * i}.", "labeler_id": "l1", **over}


def comparison_row(i: int = 0, k: int = 4, **over: Any) -> dict[str, Any]:
    row = {
        "comparison_id": f"c{i}",
        "prompt_id": f"p{i}",
        "user_id": f"u{i}",
        "split": "train",
        "prompt": f"Say {i}.",
        "responses": [f"answer {j}" for j in range(k)],
        "ranking": list(reversed(range(k))),
        "labeler_id": "l1",
    }
    return {**row, **over}


def pairwise_row(i: int = 0, **over: Any) -> dict[str, Any]:
    row = {"prompt_id": f"p{i}", "user_id": f"u{i}", "prompt": "Hi?", "chosen": "Hello!"}
    return {**row, "rejected": "Go away.", **over}


VALID: dict[str, list[dict[str, Any]]] = {
    "prompts": [prompt_row(0), prompt_row(1, prompt="line one\n\tline two")],
    "demonstrations": [demo_row(0), demo_row(1)],
    "comparisons": [comparison_row(0, k=4), comparison_row(1, k=9)],
    "pairwise": [pairwise_row(0), pairwise_row(1)],
    "pretrain": [
        {"doc_id": "d0", "text": "Once upon a time."},
        {"doc_id": "d1", "text": "Ünïcode ok"},
    ],
    "public_suite": [
        {"item_id": "i0", "task": "arith", "context": "", "choices": ["1", "2"], "answer": 1},
        {
            "item_id": "i1",
            "task": "arith",
            "context": "2+1=",
            "choices": ["3", "4", "5"],
            "answer": 0,
        },
    ],
    "mixture": [
        {"example_id": "e0", "family": "flan", "prompt": "Translate: hi", "response": "salut"},
        {"example_id": "e1", "family": "t0", "prompt": "Sum 1 2", "response": "3"},
    ],
}


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def table_error(path: Path, kind: str, **kwargs: Any) -> TableError:
    with pytest.raises(TableError) as info:
        load_table(path, kind, **kwargs)
    return info.value


def assert_names(error: TableError, path: Path, row: int, field: str, text: str = "") -> None:
    """The message holds a line naming file, row and field (and containing text)."""
    prefix = f"{path} row {row} field {field!r}: "
    lines = [line for line in str(error).splitlines() if line.startswith(prefix)]
    assert lines, f"no line starting with {prefix!r} in:\n{error}"
    assert any(text in line for line in lines), f"{text!r} not in {lines}"


@pytest.mark.parametrize("kind", schemas.KINDS)
def test_valid_table_of_each_kind_passes(tmp_path: Path, kind: str) -> None:
    # given a well-formed table of this kind
    path = write_rows(tmp_path / f"{kind}.jsonl", VALID[kind])
    # when it is loaded
    frame = load_table(path, kind)
    # then every row comes back with exactly the schema's columns
    assert len(frame) == len(VALID[kind])
    assert list(frame.columns) == list(schemas.schema_for(kind).columns)
    assert frame.iloc[0].to_dict() == VALID[kind][0]
    # and with the dtypes pandas itself infers for those records (str, not object)
    pd.testing.assert_frame_equal(frame, pd.DataFrame(VALID[kind], columns=frame.columns))
    assert pd.api.types.is_string_dtype(frame[frame.columns[0]])


def test_empty_prompt(tmp_path: Path) -> None:
    # given a prompt table whose second row's prompt is only whitespace
    path = write_rows(tmp_path / "train.jsonl", [prompt_row(0), prompt_row(1, prompt=" \n\t ")])
    # when it is loaded
    error = table_error(path, "prompts")
    # then the error names the file, row 2 and field 'prompt'
    assert_names(error, path, 2, "prompt", "empty after stripping whitespace")
    assert len(error.problems) == 1


def test_missing_user_id(tmp_path: Path) -> None:
    # given a row that lacks the user_id key altogether
    row = prompt_row(1)
    del row["user_id"]
    path = write_rows(tmp_path / "train.jsonl", [prompt_row(0), prompt_row(2), row])
    # when it is loaded
    error = table_error(path, "prompts")
    # then exactly that row is named, once (not also as 'is null')
    assert_names(error, path, 3, "user_id", "missing required field")
    assert len(error.problems) == 1


def test_null_user_id(tmp_path: Path) -> None:
    # given a row whose user_id is JSON null
    path = write_rows(tmp_path / "train.jsonl", [prompt_row(0, user_id=None)])
    # when it is loaded / then the null is reported on row 1
    assert_names(table_error(path, "prompts"), path, 1, "user_id", "is null")


def test_unexpected_field(tmp_path: Path) -> None:
    # given a row with a key the schema does not have (strict columns)
    path = write_rows(tmp_path / "train.jsonl", [prompt_row(0), prompt_row(1, extra=1)])
    # when it is loaded / then the extra key is named on its row
    assert_names(table_error(path, "prompts"), path, 2, "extra", "unexpected field")


def test_duplicate_prompt_id(tmp_path: Path) -> None:
    # given rows 1 and 3 sharing a prompt_id
    rows = [prompt_row(0), prompt_row(1), prompt_row(2, prompt_id="p0")]
    path = write_rows(tmp_path / "train.jsonl", rows)
    # when it is loaded
    error = table_error(path, "prompts")
    # then both copies are named, each pointing at the other
    assert_names(error, path, 3, "prompt_id", "duplicate value 'p0' (also on row 1)")
    assert_names(error, path, 1, "prompt_id", "duplicate value 'p0' (also on row 3)")


def test_empty_response(tmp_path: Path) -> None:
    # given a demonstration with an empty response
    path = write_rows(tmp_path / "train.jsonl", [demo_row(0), demo_row(1, response="")])
    # when it is loaded / then row 2, field 'response' is named
    assert_names(table_error(path, "demonstrations"), path, 2, "response", "empty")


@pytest.mark.parametrize("ranking", [[0, 1, 2, 2], [0, 1, 2], [0, 1, 2, 4], [3, 2, 1, 0, 4]])
def test_ranking_not_a_permutation(tmp_path: Path, ranking: list[int]) -> None:
    # given a comparison of K=4 responses whose ranking is not a permutation of 0..3
    rows = [comparison_row(0), comparison_row(1, k=4, ranking=ranking)]
    path = write_rows(tmp_path / "train.jsonl", rows)
    # when it is loaded
    error = table_error(path, "comparisons")
    # then row 2, field 'ranking' is named once (not once per column)
    assert_names(error, path, 2, "ranking", "permutation")
    assert len(error.problems) == 1


def test_ranking_not_integers(tmp_path: Path) -> None:
    # given a ranking holding strings and a bool
    rows = [comparison_row(0, ranking=["0", 1, 2, True])]
    path = write_rows(tmp_path / "train.jsonl", rows)
    # when it is loaded / then the type is named
    assert_names(table_error(path, "comparisons"), path, 1, "ranking", "list of integers")


@pytest.mark.parametrize("k", [3, 10])
def test_k_outside_bounds(tmp_path: Path, k: int) -> None:
    # given a comparison with K responses outside 4..9 (ranking itself consistent)
    path = write_rows(tmp_path / "train.jsonl", [comparison_row(0), comparison_row(1, k=k)])
    # when it is loaded
    error = table_error(path, "comparisons")
    # then row 2, field 'responses' says how many it got
    assert_names(error, path, 2, "responses", f"4 to 9 responses (got a list of {k}")


def test_k_bounds_are_configurable(tmp_path: Path) -> None:
    # given a comparison with K=3
    path = write_rows(tmp_path / "train.jsonl", [comparison_row(0, k=3)])
    # when it is loaded with bounds 2..3 / then it passes
    assert len(load_table(path, "comparisons", k_range=(2, 3))) == 1
    # and with bounds 4..5 it fails naming those bounds
    error = table_error(path, "comparisons", k_range=(4, 5))
    assert_names(error, path, 1, "responses", "4 to 5 responses")


def test_empty_response_inside_comparison_is_data(tmp_path: Path) -> None:
    # given a comparison whose third response is blank (a policy may answer nothing)
    row = comparison_row(0)
    row["responses"][2] = ""
    path = write_rows(tmp_path / "train.jsonl", [row])
    # when it is loaded / then it is accepted as one of the K responses
    assert len(load_table(path, "comparisons")) == 1


def test_control_character_inside_comparison(tmp_path: Path) -> None:
    # given a comparison whose third response holds a control character
    row = comparison_row(0)
    row["responses"][2] = "bad\x15text"
    path = write_rows(tmp_path / "train.jsonl", [row])
    # when it is loaded / then the responses field of row 1 is named
    assert_names(table_error(path, "comparisons"), path, 1, "responses", "control characters")


def test_pairwise_chosen_equals_rejected(tmp_path: Path) -> None:
    # given an imported pair whose rejected equals chosen up to whitespace
    rows = [pairwise_row(0), pairwise_row(1, chosen="Same.", rejected="  Same.\n")]
    path = write_rows(tmp_path / "pairs.jsonl", rows)
    # when it is loaded
    error = table_error(path, "pairwise")
    # then row 2, field 'rejected' is named once
    assert_names(error, path, 2, "rejected", "identical to 'chosen'")
    assert len(error.problems) == 1


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\r", "\x7f", "\x85"])
def test_control_character_in_prompt(tmp_path: Path, char: str) -> None:
    # given a prompt holding a control character (JSON-escaped, so the line parses)
    path = write_rows(tmp_path / "train.jsonl", [prompt_row(0, prompt=f"say{char}hi")])
    # when it is loaded / then row 1, field 'prompt' is named
    assert_names(table_error(path, "prompts"), path, 1, "prompt", "control character")


def test_invalid_utf8(tmp_path: Path) -> None:
    # given a file whose second line holds bytes that are not UTF-8 inside the prompt
    good = json.dumps(prompt_row(0)).encode()
    bad = b'{"prompt_id": "p1", "user_id": "u1", "split": "train", "family": "qa", "prompt": "caf\xe9 \xff"}'
    path = tmp_path / "train.jsonl"
    path.write_bytes(good + b"\n" + bad + b"\n")
    # when it is read, raw or as a table
    for error in (table_error(path, "prompts"), pytest.raises(TableError, read_jsonl, path).value):
        # then row 2 is named, with the field holding the bytes
        assert_names(error, path, 2, "prompt", "invalid UTF-8 byte 0xe9")


def test_invalid_utf8_outside_a_value(tmp_path: Path) -> None:
    # given a line that is not UTF-8 and not JSON either
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\xff\xfe garbage\n")
    # when it is read / then the whole line is named
    assert_names(pytest.raises(TableError, read_jsonl, path).value, path, 1, "<line>", "UTF-8")


def test_malformed_lines(tmp_path: Path) -> None:
    # given a malformed JSON line, a non-object line, a blank line mid-file,
    # a repeated key, and a trailing blank line (which is fine)
    lines = [
        json.dumps(prompt_row(0)),
        '{"prompt_id": "p1",',
        "[1, 2]",
        "",
        '{"a": 1, "a": 2}',
        json.dumps(prompt_row(5)),
        "",
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # when it is read
    error = pytest.raises(TableError, read_jsonl, path).value
    # then each bad line is named by its line number
    assert_names(error, path, 2, "<line>", "malformed JSON")
    assert_names(error, path, 3, "<line>", "expected a JSON object, got list")
    assert_names(error, path, 4, "<line>", "blank line")
    assert_names(error, path, 5, "a", "more than once")
    assert len(error.problems) == 4


def test_a_json_array_is_named_once_as_not_json_lines(tmp_path: Path) -> None:
    # given a table written as one JSON array (indented, as json.dump(indent=2) writes it)
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps([prompt_row(i) for i in range(30)], indent=2), encoding="utf-8")
    # when it is read
    error = pytest.raises(TableError, read_jsonl, path).value
    # then one problem says what the file is and how to write it, not one per line
    assert [(p.row, p.field) for p in error.problems] == [(0, "<line>")]
    assert f"{path} field '<line>': holds one JSON array, not JSON Lines" in str(error)
    assert "jq -c '.[]'" in str(error)
    # and on one line too
    path.write_text(json.dumps([prompt_row(0), prompt_row(1)]), encoding="utf-8")
    error = pytest.raises(TableError, read_jsonl, path).value
    assert [(p.row, p.message) for p in error.problems] == [(0, JSON_ARRAY)]


def test_row_numbers_survive_unparseable_lines(tmp_path: Path) -> None:
    # given an unparseable line 1 and an empty prompt on line 3
    path = tmp_path / "train.jsonl"
    rows = [json.dumps(prompt_row(1)), json.dumps(prompt_row(2, prompt=""))]
    path.write_text("{oops\n" + "\n".join(rows) + "\n", encoding="utf-8")
    # when it is loaded
    error = table_error(path, "prompts")
    # then both are reported, the empty prompt on its real line 3
    assert_names(error, path, 1, "<line>", "malformed JSON")
    assert_names(error, path, 3, "prompt", "empty")


def test_sequence_longer_than_context(tmp_path: Path) -> None:
    # given demonstrations, one of which is 12 words long, and a context of 10 "tokens"
    long_row = demo_row(1, prompt="one two three four five six", response="a b c d e f")
    path = write_rows(tmp_path / "train.jsonl", [demo_row(0), long_row])

    def count_tokens(row: dict[str, Any]) -> int:
        return len(row["prompt"].split()) + len(row["response"].split())

    # when it is loaded with that context
    error = table_error(path, "demonstrations", max_tokens=10, count_tokens=count_tokens)
    # then row 2 is named with its length and the context
    assert_names(error, path, 2, "response", "sequence has 12 tokens > context 10")
    assert len(error.problems) == 1
    # and without a length limit the table is fine
    assert len(load_table(path, "demonstrations")) == 2


def test_prompt_longer_than_context(tmp_path: Path) -> None:
    # given a prompt table and a context of 3 words
    path = write_rows(tmp_path / "train.jsonl", [prompt_row(0, prompt="a b c d")])
    # when it is loaded / then the prompt field is named
    error = table_error(
        path, "prompts", max_tokens=3, count_tokens=lambda r: len(r["prompt"].split())
    )
    assert_names(error, path, 1, "prompt", "sequence has 4 tokens > context 3")


def test_lazy_validation_reports_every_problem(tmp_path: Path) -> None:
    # given a table with problems on several rows and fields
    rows = [
        prompt_row(0, prompt=""),
        prompt_row(1, split="dev"),
        prompt_row(2, family=7),
        prompt_row(3, prompt_id="p0", user_id=" "),
    ]
    path = write_rows(tmp_path / "train.jsonl", rows)
    # when it is loaded
    error = table_error(path, "prompts")
    # then all of them come in one error, in row order
    assert_names(error, path, 1, "prompt", "empty")
    assert_names(error, path, 2, "split", "must be one of ('train', 'valid', 'test') (got 'dev')")
    assert_names(error, path, 3, "family", "must be a string (got 7)")
    assert_names(error, path, 4, "prompt_id", "duplicate")
    assert_names(error, path, 4, "user_id", "empty")
    assert [p.row for p in error.problems] == sorted(p.row for p in error.problems)


def test_message_is_capped(tmp_path: Path) -> None:
    # given 25 empty prompts and a good one (a check failing on every row is one problem)
    rows = [prompt_row(i, prompt="") for i in range(25)] + [prompt_row(25)]
    path = write_rows(tmp_path / "train.jsonl", rows)
    # when it is loaded
    error = table_error(path, "prompts")
    # then 20 are listed and the rest counted, while .problems keeps all 25
    message = str(error)
    assert len(error.problems) == 25
    assert f"{path} row 20 field 'prompt'" in message
    assert f"{path} row 21 field" not in message
    assert message.endswith("... and 5 more")


def test_a_check_failing_on_every_row_is_one_problem_of_the_file(tmp_path: Path) -> None:
    # given three prompts, every one empty, and every family a number
    rows = [prompt_row(i, prompt=" ", family=i) for i in range(3)]
    error = table_error(write_rows(tmp_path / "train.jsonl", rows), "prompts")
    # then one problem per column, row 0 (the whole file), the values shown where they tell
    assert [(p.row, p.field) for p in error.problems] == [(0, "family"), (0, "prompt")]
    messages = {p.field: p.message for p in error.problems}
    assert messages["prompt"].endswith("in all 3 rows")
    assert messages["family"].endswith(" in all 3 rows (got 0, 1, 2)")


def test_public_suite_problems(tmp_path: Path) -> None:
    # given items with an answer out of range, too few choices and repeated choices
    rows = [
        {"item_id": "i0", "task": "t", "context": "", "choices": ["a", "b"], "answer": 2},
        {"item_id": "i1", "task": "t", "context": "", "choices": ["a"], "answer": 0},
        {"item_id": "i2", "task": "t", "context": "", "choices": ["a", "a"], "answer": 0},
        {"item_id": "i3", "task": "t", "context": "", "choices": ["a", "b"], "answer": True},
    ]
    path = write_rows(tmp_path / "suite.jsonl", rows)
    # when it is loaded
    error = table_error(path, "public_suite")
    # then each is named on its row and field
    assert_names(error, path, 1, "answer", "index into choices")
    assert_names(error, path, 2, "choices", "at least 2 distinct")
    assert_names(error, path, 3, "choices", "at least 2 distinct")
    assert_names(error, path, 4, "answer", "must be an integer")


def test_user_in_two_splits(tmp_path: Path) -> None:
    # given valid train and valid tables where user u1 appears in both
    train_path = write_rows(tmp_path / "train.jsonl", [prompt_row(0), prompt_row(1)])
    valid_rows = [prompt_row(2, split="valid"), prompt_row(3, user_id="u1", split="valid")]
    valid_path = write_rows(tmp_path / "valid.jsonl", valid_rows)
    tables = {str(p): load_table(p, "prompts") for p in (train_path, valid_path)}
    # when the splits are checked
    with pytest.raises(TableError) as info:
        check_user_splits(tables)
    # then the second occurrence is named with both splits and the first place
    assert_names(
        info.value,
        valid_path,
        2,
        "user_id",
        f"user 'u1' is in split 'valid' here but in split 'train' at {train_path} row 2",
    )
    assert len(info.value.problems) == 1


def test_split_column_disagrees_with_file(tmp_path: Path) -> None:
    # given a train file holding a row marked valid (a fresh user, so no conflict)
    path = write_rows(tmp_path / "train.jsonl", [prompt_row(0), prompt_row(1, split="valid")])
    # when the splits are checked / then row 2's split is named
    with pytest.raises(TableError) as info:
        check_user_splits({str(path): load_table(path, "prompts")})
    assert_names(info.value, path, 2, "split", "split 'valid' in a train file")


def test_disjoint_users_pass(tmp_path: Path) -> None:
    # given train and test tables with disjoint users (a user may repeat within a split)
    train = write_rows(tmp_path / "train.jsonl", [prompt_row(0), prompt_row(1, user_id="u0")])
    test = write_rows(tmp_path / "test.jsonl", [prompt_row(2, split="test")])
    # when the splits are checked / then nothing is raised
    check_user_splits({str(p): load_table(p, "prompts") for p in (train, test)})


def test_write_jsonl_is_byte_stable_and_sorted(tmp_path: Path) -> None:
    # given rows with unsorted keys, non-ASCII text and numpy values (as from a DataFrame)
    frame = pd.DataFrame({"z": [1, 2], "a": ["é\n", "ok"], "m": [[1, 2], []]})
    rows = frame.to_dict("records")
    first, second = tmp_path / "a.jsonl", tmp_path / "sub" / "b.jsonl"
    # when they are written twice
    write_jsonl(first, rows)
    write_jsonl(second, [dict(reversed(list(r.items()))) for r in rows])
    # then both files are byte-identical, compact, sorted, UTF-8 (not \u escapes)
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() == '{"a":"é\\n","m":[1,2],"z":1}\n{"a":"ok","m":[],"z":2}\n'.encode()
    assert read_jsonl(first) == [{"a": "é\n", "m": [1, 2], "z": 1}, {"a": "ok", "m": [], "z": 2}]
    # and no temp file is left behind
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.jsonl", "b.jsonl"]


def test_write_jsonl_is_atomic(tmp_path: Path) -> None:
    # given an existing table
    path = tmp_path / "t.jsonl"
    write_jsonl(path, [{"a": 1}])

    def rows() -> Any:
        yield {"a": 2}
        raise RuntimeError("writer crashed")

    # when a rewrite fails half way
    with pytest.raises(RuntimeError):
        write_jsonl(path, rows())
    # then the old file is intact and no temp file remains
    assert path.read_bytes() == b'{"a":1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["t.jsonl"]


def test_unknown_kind(tmp_path: Path) -> None:
    # given a table / when loaded as an unknown kind / then ValueError lists the kinds
    path = write_rows(tmp_path / "x.jsonl", VALID["prompts"])
    with pytest.raises(ValueError, match="unknown table kind"):
        load_table(path, "prompt")
