"""Own data as the Hub gives it: id columns as integers, answers with surrounding whitespace."""

import json
from pathlib import Path

import pandas as pd
import pytest

from instructflow.tasks.dataset import load_dataset
from instructflow.tasks.dataset_schemas import identifier
from instructflow.tasks.tables import TableError
from tests.own_data import write_hh_dataset, write_pairwise_dataset

TABLES = ("prompts", "demonstrations", "preferences")


def _numbered(folder: Path, fmt: str, blank_row: int | None = None) -> None:
    """Rewrite every table's user_id "user-N" as the integer N (row `blank_row` of
    preferences: null, as a Parquet integer column with a gap reads back as float64)."""
    for table in TABLES:
        path = folder / f"{table}.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        for row in rows:
            row["user_id"] = int(row["user_id"].removeprefix("user-"))
        if table == "preferences" and blank_row is not None:
            rows[blank_row - 1]["user_id"] = None
        if fmt == "parquet":
            path.unlink()
            pd.DataFrame(rows).to_parquet(folder / f"{table}.parquet")
        else:
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _splits(dataset) -> list[tuple[str | None, str]]:
    return [(i.user_id, dataset.split_of[id(i)]) for i in dataset.preferences]


def test_identifier_reads_integers_as_their_digits():
    assert [identifier(v) for v in ("u-1", 7, 7.0, None, float("nan"))] == [
        "u-1", "7", "7", None, None,
    ]  # fmt: skip


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_integer_user_ids_split_as_the_same_ids_written_as_text(tmp_path, fmt):
    # given one dataset with user ids "7" and the same with 7 (JSONL ints, Parquet int64)
    text = write_hh_dataset(tmp_path / "text", n_pairs=60)
    for table in TABLES:
        path = text / f"{table}.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps(r | {"user_id": r["user_id"][5:]}) + "\n" for r in rows))
    numbered = write_hh_dataset(tmp_path / "numbered", n_pairs=60)
    _numbered(numbered, fmt)
    # then both load, split by user, into the same splits
    by_text, by_number = load_dataset(text), load_dataset(numbered)
    assert _splits(by_number) == _splits(by_text)
    assert by_number.preferences[0].user_id == "0"


def test_a_float_id_that_is_no_integer_is_refused_naming_row_and_field(tmp_path):
    folder = write_hh_dataset(tmp_path / "hh", n_pairs=60)
    _numbered(folder, "jsonl")
    path = folder / "preferences.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[4]["user_id"] = 2.5
    rows[5]["user_id"] = True
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(TableError) as e:
        load_dataset(folder)
    named = {(p.row, p.field, p.message) for p in e.value.problems}
    assert (5, "user_id", "must be a string or an integer (got 2.5)") in named
    assert (6, "user_id", "must be a string or an integer (got True)") in named


def test_a_parquet_integer_column_with_a_gap_names_only_the_gap(tmp_path):
    # given Parquet user ids 0..59 with row 3's missing: pandas reads the column as float64
    folder = write_hh_dataset(tmp_path / "hh", n_pairs=60)
    _numbered(folder, "parquet", blank_row=3)
    # then the missing one is the only problem (3.0 is user "3", not a wrong type)
    with pytest.raises(TableError) as e:
        load_dataset(folder)
    assert [(p.row, p.field) for p in e.value.problems] == [(3, "user_id")]
    assert "missing while 59 other rows of this table have one" in str(e.value)


def test_text_answers_lose_surrounding_whitespace_as_conversation_answers_do(tmp_path):
    # given TRL's prompt + completion texts, whose completions start with a space
    folder = write_pairwise_dataset(tmp_path / "pw", n=60)
    path = folder / "preferences.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    spaced = [r | {"chosen": f" {r['chosen']}\n", "rejected": f" {r['rejected']}"} for r in rows]
    path.write_text("".join(json.dumps(r) + "\n" for r in spaced))
    # then each answer is read without it (the frame "A: " adds its own space)
    loaded = load_dataset(folder).preferences
    assert [i.responses for i in loaded] == [[r["chosen"], r["rejected"]] for r in rows]


def test_a_ranking_of_whole_floats_reads_as_the_same_ranking_of_integers(tmp_path):
    # given K-wise rankings in Parquet whose ranking column is float64 ([0.0, 2.0, 1.0]), as
    # pandas writes a list column built from a float array, beside the same in integers
    from tests.own_data import write_kwise_dataset

    ints = write_kwise_dataset(tmp_path / "ints", n=60, fmt="parquet")
    floats = write_kwise_dataset(tmp_path / "floats", n=60, fmt="parquet")
    path = floats / "preferences.parquet"
    table = pd.read_parquet(path)
    table["ranking"] = [[float(i) for i in r] for r in table["ranking"]]
    table.to_parquet(path)
    # then it loads as the integers do (it is a permutation: it was refused as not one),
    assert [(i.responses, i.ranking) for i in load_dataset(floats).preferences] == [
        (i.responses, i.ranking) for i in load_dataset(ints).preferences
    ]
    # while a ranking that holds a fraction is still refused, naming the row
    table.at[4, "ranking"] = [0.5] + [float(i) for i in table.at[4, "ranking"][1:]]
    table.to_parquet(path)
    with pytest.raises(TableError) as e:
        load_dataset(floats)
    assert [(p.row, p.field) for p in e.value.problems] == [(5, "ranking")]
