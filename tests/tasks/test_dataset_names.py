"""Columns and files a dataset directory holds but the pipeline does not read: listed, near misses named."""

import gzip
import itertools
import json
from pathlib import Path

import pandas as pd
import pytest

from instructflow.tasks import dataset_schemas as ds
from instructflow.tasks.dataset import load_dataset
from instructflow.tasks.dataset_names import (
    TABLE_COLUMNS,
    near_column,
    near_table,
    one_typo,
    split_file,
)
from instructflow.tasks.tables import TableError
from tests.own_data import write_pairwise_dataset


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_misnamed_dataset(folder: Path) -> Path:
    """Pairs whose split and user columns are misspelled, a note column, and misnamed tables."""
    folder = write_pairwise_dataset(folder, n=150)
    rows = _lines(folder / "preferences.jsonl")
    for i, row in enumerate(rows):
        row |= {"Split": "test" if i % 5 == 0 else "train", "userId": f"u{i % 30}", "notes": "-"}
    _write(folder / "preferences.jsonl", rows)
    (folder / "prompts.jsonl").rename(folder / "prompts.json")
    _write(folder / "demonstration.jsonl", [{"prompt": "Say hi.", "response": "hi"}])
    (folder / "README.md").write_text("my data\n")
    (folder / ".gitignore").write_text("*.tmp\n")
    return folder


def test_ignored_columns_and_unread_files_are_listed_and_near_misses_named(tmp_path):
    # given a directory whose split/user columns and two tables' file names are misspelled
    folder = write_misnamed_dataset(tmp_path / "mine")
    # when it loads (it is valid: these are warnings, not refusals)
    summary = load_dataset(folder).summary
    # then every ignored column and every file not read is listed (hidden files aside)
    assert summary["ignored_columns"] == {"preferences": ["Split", "notes", "userId"]}
    assert summary["unread_files"] == ["README.md", "demonstration.jsonl", "prompts.json"]
    # and each name that nearly is a known one gets a warning naming that one
    assert summary["naming_warnings"] == [
        "preferences.jsonl: column 'Split' is ignored: did you mean 'split'?",
        "preferences.jsonl: column 'userId' is ignored: did you mean 'user_id'?",
        "demonstration.jsonl is not read: did you mean demonstrations.jsonl?",
        "prompts.json is not read: did you mean prompts.jsonl?",
    ]
    assert summary["split_rule"] == "prompt_hash"  # what the warnings are about


def test_a_column_of_the_other_preference_shape_is_not_suggested(tmp_path):
    # given pairs with a Dahoas-style `response` column beside chosen and rejected
    folder = write_pairwise_dataset(tmp_path / "pairs", n=150)
    rows = [r | {"response": r["chosen"]} for r in _lines(folder / "preferences.jsonl")]
    _write(folder / "preferences.jsonl", rows)
    # then `response` is listed as ignored, without "did you mean 'responses'?": following
    # it would make the table a ranking without its `ranking`
    summary = load_dataset(folder).summary
    assert summary["ignored_columns"] == {"preferences": ["response"]}
    assert summary["naming_warnings"] == []
    # while a near miss of the table's own shape is still named
    rows = [r | {"Chosen": "x"} for r in rows]
    _write(folder / "preferences.jsonl", rows)
    warnings = load_dataset(folder).summary["naming_warnings"]
    assert warnings == ["preferences.jsonl: column 'Chosen' is ignored: did you mean 'chosen'?"]


@pytest.mark.parametrize(
    "column, table, meant",
    [
        ("Split", "preferences", "split"),
        ("userId", "prompts", "user_id"),
        ("user-id", "demonstrations", "user_id"),
        ("USER ID", "preferences", "user_id"),
        ("Labeler_ID", "preferences", "labeler_id"),
        ("Chosen", "preferences", "chosen"),
        ("response", "preferences", "responses"),  # a final s
        ("rejcted", "preferences", "rejected"),  # one letter left out
        ("choosen", "preferences", "chosen"),  # one added
        ("rankign", "preferences", "ranking"),  # two swapped
        ("promtp", "prompts", "prompt"),
        ("rating", "preferences", None),  # two letters from ranking: another column
        ("texts", "prompts", None),
        ("responses", "preferences", None),  # known to the table (ignored in a pairwise shape)
        ("notes", "preferences", None),
        ("Text", "prompts", None),  # a column of another table
    ],
)
def test_a_column_name_near_a_known_one_is_matched(column, table, meant):
    assert near_column(column, table) == meant


def _edit_distance(a: str, b: str) -> int:
    """Letters left out, added, changed or swapped with the next (optimal string alignment)."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i, j in itertools.product(range(1, len(a) + 1), range(1, len(b) + 1)):
        d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
        if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
            d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]


def testone_typo_is_an_edit_distance_of_one():
    # against the dynamic-programming distance, on every pair of short words of three letters
    words = ["".join(w) for n in range(5) for w in itertools.product("abc", repeat=n)]
    for a, b in itertools.product(words, repeat=2):
        assert one_typo(a, b) == (_edit_distance(a, b) == 1), (a, b)


@pytest.mark.parametrize(
    "name, found, meant",
    [
        ("demonstration.jsonl", ["preferences"], "demonstrations.jsonl"),
        ("prompts.json", ["preferences"], "prompts.jsonl"),
        ("Preferences.PARQUET", [], "preferences.parquet"),
        ("preference.jsonl", [], "preferences.jsonl"),
        ("prompts.json", ["preferences", "prompts"], None),  # the table is there
        ("README.md", ["preferences"], None),
    ],
)
def test_a_file_name_near_a_table_is_matched_unless_that_table_is_there(name, found, meant):
    assert near_table(name, found) == meant


def test_the_known_columns_cover_every_schema():
    schemas = {
        "prompts": [ds.prompts_schema(set()), ds.prompts_schema({"messages"})],
        "demonstrations": [
            ds.demonstrations_schema(set()),
            ds.demonstrations_schema({"messages"}),
        ],
        "preferences": [ds.preferences_schema(shape) for shape in ds.SHAPES],
        "pretrain": [ds.text_schema()],
        "flan": [ds.mixture_schema()],
        "t0": [ds.mixture_schema()],
    }
    for table, each in schemas.items():
        assert {c for schema in each for c in schema.columns} <= set(TABLE_COLUMNS[table]), table


def _message(folder: Path) -> str:
    with pytest.raises(TableError) as e:
        load_dataset(folder)
    return str(e.value)


def test_a_refused_table_names_the_column_or_file_it_probably_meant(tmp_path):
    # given preferences whose chosen column is capitalised
    folder = write_pairwise_dataset(tmp_path / "pw", n=60)
    _write(folder / "preferences.jsonl", [
        {("Chosen" if k == "chosen" else k): v for k, v in row.items()}
        for row in _lines(folder / "preferences.jsonl")
    ])  # fmt: skip
    assert "fit none of the shapes" in _message(folder)
    assert "(did you mean 'chosen' for 'Chosen'?)" in _message(folder)
    # given prompts whose prompt column is capitalised
    folder = write_pairwise_dataset(tmp_path / "pr", n=60)
    _write(
        folder / "prompts.jsonl",
        [{"Prompt": r["prompt"]} for r in _lines(folder / "prompts.jsonl")],
    )
    assert "field 'prompt': missing required column (the table has 'Prompt')" in _message(folder)
    # given the preferences table's file name misspelled
    folder = write_pairwise_dataset(tmp_path / "fn", n=60)
    (folder / "preferences.jsonl").rename(folder / "preference.jsonl")
    assert (
        "no preferences.jsonl or preferences.parquet"
        " (preference.jsonl is not read: did you mean preferences.jsonl?)"
    ) in _message(folder)


def test_a_compressed_or_csv_table_is_told_how_to_become_one_not_to_be_renamed(tmp_path):
    # given the preferences table gzipped, as Hub JSON Lines often come
    folder = write_pairwise_dataset(tmp_path / "gz", n=60)
    gz = folder / "preferences.jsonl.gz"
    gz.write_bytes(gzip.compress((folder / "preferences.jsonl").read_bytes()))
    (folder / "preferences.jsonl").unlink()
    # then it is told to decompress it, not "did you mean preferences.jsonl?" (a rename
    # leaves gzip bytes the JSONL reader cannot parse)
    message = _message(folder)
    assert "preferences.jsonl.gz is not read: decompress it to preferences.jsonl" in message
    assert "did you mean" not in message
    # given it as CSV: written as Parquet, with the call that does it
    folder = write_pairwise_dataset(tmp_path / "csv", n=60)
    pd.read_json(folder / "preferences.jsonl", lines=True).to_csv(
        folder / "preferences.csv", index=False
    )
    (folder / "preferences.jsonl").unlink()
    message = _message(folder)
    assert "preferences.csv is not read: tables are JSON Lines or Parquet" in message
    assert "pandas.read_csv('preferences.csv').to_parquet('preferences.parquet')" in message
    assert "did you mean" not in message


def test_a_broken_link_in_the_directory_is_listed_as_not_read(tmp_path):
    folder = write_pairwise_dataset(tmp_path / "pw", n=60)
    (folder / "old.jsonl").symlink_to(tmp_path / "gone.jsonl")
    assert load_dataset(folder).summary["unread_files"] == ["old.jsonl"]


@pytest.mark.parametrize(
    "name, found",
    [
        ("preferences_test.jsonl", ("preferences", "test")),
        ("train_prefs.parquet", ("preferences", "train")),  # ultrafeedback_binarized
        ("test_sft.jsonl", ("demonstrations", "test")),
        ("prompts-validation.jsonl", ("prompts", "valid")),
        ("train-00000-of-00001.parquet", (None, "train")),  # a Hub data file
        ("test.json", (None, "test")),
        ("t0_dev.jsonl", ("t0", "valid")),
        ("preferences.jsonl", None),
        ("contest.jsonl", None),  # a word that holds a split word is not one
        ("train_notes.md", None),
    ],
)
def test_a_file_named_as_one_split_of_a_table_is_recognised(name, found):
    assert split_file(name) == found


def test_a_split_in_a_file_of_its_own_is_named_not_silently_dropped(tmp_path):
    # given Hub-style pairs: preferences.jsonl holds the train split, the test split a file
    # of its own, which is not read (its rows would be missing from the test split)
    folder = write_pairwise_dataset(tmp_path / "hub", n=60)
    (folder / "preferences_test.jsonl").write_text((folder / "preferences.jsonl").read_text())
    # then a warning says where its rows go
    assert load_dataset(folder).summary["naming_warnings"] == [
        "preferences_test.jsonl is not read: a table is one file whose rows name their split; "
        'put its rows in preferences.jsonl with "split": "test" (`instructflow data from-hub`'
        " gathers a Hub download's split files into one)"
    ]
    # and with no preferences.jsonl, one file per split: the refusal says so
    (folder / "preferences.jsonl").rename(folder / "train_prefs.jsonl")
    message = _message(folder)
    assert "no preferences.jsonl or preferences.parquet" in message
    assert (
        "train_prefs.jsonl is not read: a table is one file whose rows name their split; "
        'put its rows in preferences.jsonl with "split": "train"'
    ) in message


def test_a_hub_snapshot_with_split_files_a_level_down_is_explained(tmp_path):
    # given a dataset as the Hub stores it: data/train-....parquet, data/test-..., a card
    folder = write_pairwise_dataset(tmp_path / "hub", n=60)
    (folder / "data").mkdir()
    (folder / "preferences.jsonl").rename(folder / "data" / "train-00000-of-00001.jsonl")
    (folder / "prompts.jsonl").rename(folder / "data" / "test-00000-of-00001.jsonl")
    (folder / "README.md").write_text("# a dataset card\n")
    # then the refusal points into data/ and says how tables are laid out
    assert (
        "no preferences.jsonl or preferences.parquet (data/ holds files named as splits, not"
        " read: test-00000-of-00001.jsonl, train-00000-of-00001.jsonl; tables are read from the"
        " directory itself, one file each (preferences.jsonl, ...) whose rows name their split"
    ) in _message(folder)
    # and names the command that gathers them, for this folder
    assert f"`instructflow data from-hub {folder} DIR` gathers them" in _message(folder)


def test_preferences_given_as_both_jsonl_and_parquet_is_one_problem_not_also_missing(tmp_path):
    from instructflow.tasks.dataset_files import find_tables

    # given a dataset whose preferences are in both formats (a Parquet export beside the JSONL)
    folder = write_pairwise_dataset(tmp_path / "mine", n=20)
    pd.read_json(folder / "preferences.jsonl", lines=True).to_parquet(
        folder / "preferences.parquet"
    )
    # when its tables are found
    found, problems = find_tables(folder)
    # then the one problem says so; the table is not also "missing", nor a near miss of itself
    assert [str(p) for p in problems] == [
        f"{folder} field 'preferences': table given as both JSONL and Parquet"
    ]
    assert "preferences" not in found


def test_a_table_in_hub_shards_is_named_not_silently_half_read(tmp_path):
    # given pairs saved as the Hub shards a table: preferences.parquet holds the first half,
    # preferences-00001-of-00002.parquet the rest, which is not read
    folder = write_pairwise_dataset(tmp_path / "shards", n=60)
    frame = pd.DataFrame(_lines(folder / "preferences.jsonl"))
    (folder / "preferences.jsonl").unlink()
    frame.iloc[:30].to_parquet(folder / "preferences.parquet")
    frame.iloc[30:].to_parquet(folder / "preferences-00001-of-00002.parquet")
    # then a warning says that its rows are not read, and where they go
    assert load_dataset(folder).summary["naming_warnings"] == [
        "preferences-00001-of-00002.parquet is not read: it is a shard of the preferences"
        " table, and a table is one file: put its rows in preferences.parquet"
    ]
    # and with every shard so named, the refusal names them
    (folder / "preferences.parquet").rename(folder / "preferences-00000-of-00002.parquet")
    message = _message(folder)
    assert "no preferences.jsonl or preferences.parquet" in message
    assert "preferences-00000-of-00002.parquet is not read: it is a shard" in message
