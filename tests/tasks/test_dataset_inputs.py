"""A user's dataset as new users write it: encodings, empty tables, misnamed files and columns."""

import codecs
import json
from pathlib import Path

import pandas as pd
import pytest

from instructflow.tasks.dataset import load_dataset
from instructflow.tasks.tables import TableError
from tests.own_data import write_pairwise_dataset


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8-sig").splitlines()]


def _problems(error: TableError) -> list[tuple[str, int, str]]:
    return [(Path(p.file).name, p.row, p.field) for p in error.problems]


def test_a_utf8_byte_order_mark_before_the_first_row_is_skipped(tmp_path):
    # given a preferences table saved with a BOM (as Windows editors and Excel write UTF-8)
    folder = write_pairwise_dataset(tmp_path / "pw", n=60)
    path = folder / "preferences.jsonl"
    path.write_bytes(codecs.BOM_UTF8 + path.read_bytes())
    # when it loads
    data = load_dataset(folder)
    # then every row is read, the first one included, with its text unchanged
    assert len(data.preferences) == 60
    assert data.preferences[0].prompt == _lines(path)[0]["prompt"]


def test_a_windows_line_break_inside_a_text_is_kept_as_written(tmp_path):
    # given a response holding a Windows line break ("\r\n" escaped in the JSON string),
    # as web-scraped Hub datasets do
    folder = write_pairwise_dataset(tmp_path / "pw", n=60)
    path = folder / "preferences.jsonl"
    rows = _lines(path)
    rows[4]["chosen"] = "apple\r\napple"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # when it loads
    data = load_dataset(folder)
    # then that row's text is the file's, line break and all
    assert "apple\r\napple" in data.preferences[4].responses


@pytest.mark.parametrize("text", ["apple\rapple", "apple\r", "apple\n\rapple"])
def test_a_lone_carriage_return_inside_a_text_is_refused_naming_row_and_field(tmp_path, text):
    # given a response holding a carriage return not followed by a line feed (a bad conversion)
    folder = write_pairwise_dataset(tmp_path / "pw", n=60)
    path = folder / "preferences.jsonl"
    rows = _lines(path)
    rows[4]["chosen"] = text
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # then it is refused as a control character (only \n, \r\n and \t are allowed), on that cell
    with pytest.raises(TableError, match=r"only \\n, \\r\\n and \\t are allowed") as e:
        load_dataset(folder)
    assert _problems(e.value) == [("preferences.jsonl", 5, "chosen")]


@pytest.mark.parametrize("table", ["preferences", "demonstrations", "prompts"])
def test_an_empty_jsonl_table_is_refused_as_empty_naming_the_file(tmp_path, table):
    # given a good dataset and one of its tables emptied (a demonstrations table is added empty)
    folder = write_pairwise_dataset(tmp_path / "pw", n=60)
    (folder / f"{table}.jsonl").write_text("")
    # then the refusal says the table is empty, once, on that file (not a missing column or shape)
    with pytest.raises(TableError) as e:
        load_dataset(folder)
    assert _problems(e.value) == [(f"{table}.jsonl", 0, "<line>")]
    assert "the table is empty" in str(e.value)


def test_a_parquet_table_with_columns_but_no_rows_is_refused_as_empty(tmp_path):
    # given preferences.parquet with prompt/chosen/rejected columns and no rows
    folder = write_pairwise_dataset(tmp_path / "pw", n=60)
    (folder / "preferences.jsonl").unlink()
    pd.DataFrame({"prompt": [], "chosen": [], "rejected": []}).to_parquet(
        folder / "preferences.parquet"
    )
    with pytest.raises(TableError) as e:
        load_dataset(folder)
    assert _problems(e.value) == [("preferences.parquet", 0, "<line>")]
    assert "the table is empty" in str(e.value)


def test_a_parquet_column_of_the_wrong_type_is_one_problem_not_one_per_row(tmp_path):
    # given preferences.parquet whose `chosen` column holds numbers in every row
    folder = write_pairwise_dataset(tmp_path / "pw", n=60)
    frame = pd.DataFrame(_lines(folder / "preferences.jsonl"))
    (folder / "preferences.jsonl").unlink()
    frame.assign(chosen=range(60)).to_parquet(folder / "preferences.parquet")
    with pytest.raises(TableError) as e:
        load_dataset(folder)
    # then the whole column is named once, with the first values it holds
    assert _problems(e.value) == [("preferences.parquet", 0, "chosen")]
    assert "must be a string in all 60 rows (got 0, 1, 2, ...)" in str(e.value)
    # and the same column wrong in all but one row still names each row
    frame.loc[1:, "chosen"] = None
    frame.to_parquet(folder / "preferences.parquet")
    with pytest.raises(TableError) as e:
        load_dataset(folder)
    assert _problems(e.value) == [("preferences.parquet", row, "chosen") for row in range(2, 61)]


def test_a_dataset_directory_that_does_not_exist_is_named_as_missing(tmp_path):
    with pytest.raises(TableError) as e:
        load_dataset(tmp_path / "nodata")
    assert str(e.value).splitlines()[1:] == [
        f"{tmp_path / 'nodata'} field 'data': no such directory"
    ]


@pytest.mark.parametrize("table", ["preferences", "prompts"])
def test_an_unreadable_parquet_table_is_one_problem_naming_the_file(tmp_path, table):
    # given a good dataset and one of its tables replaced by bytes that are not Parquet
    folder = write_pairwise_dataset(tmp_path / "pw", n=60)
    (folder / f"{table}.jsonl").unlink()
    (folder / f"{table}.parquet").write_bytes(bytes(range(256)) * 2)
    # then the refusal is that file, once: no missing column or unknown shape after it
    with pytest.raises(TableError) as e:
        load_dataset(folder)
    assert _problems(e.value) == [(f"{table}.parquet", 0, "<file>")]
    message = str(e.value).splitlines()[1]
    assert message.startswith(
        f"{folder / f'{table}.parquet'} field '<file>': not a readable Parquet"
    )
    assert message.count(f"{table}.parquet") == 1  # pyarrow's copy of the path is dropped


def test_a_table_edited_after_the_run_keyed_the_import_is_refused_not_cached(tmp_path, monkeypatch):
    # given the import stage keyed by the content digest of the tables as the run found them,
    # and a table edited before the stage reads it (an editor saving, a sync landing)
    from instructflow.tasks import dataset_stage
    from instructflow.tasks.dataset import DatasetConfig
    from instructflow.tasks.stage import content_digest
    from tests.tiny_models import tiny_llama

    folder = write_pairwise_dataset(tmp_path / "pw", n=60)
    path = folder / "preferences.jsonl"
    texts = [r["prompt"] + " " + r["chosen"] for r in _lines(path)]
    model = tiny_llama(tmp_path / "llama", texts)
    keyed = {p.name: content_digest(p) for p in sorted(folder.iterdir())}
    real = dataset_stage.load_dataset

    def edited_first(*args, **kwargs):
        rows = _lines(path)
        rows[0]["chosen"] = "something else"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return real(*args, **kwargs)

    monkeypatch.setattr(dataset_stage, "load_dataset", edited_first)
    # when the stage imports it
    with pytest.raises(TableError, match="changed while the run read it") as e:
        dataset_stage.import_dataset(
            folder, str(model), DatasetConfig(), 8, tmp_path / "out", tables=keyed
        )
    # then it is refused, naming the file: tables from the new content under the old key
    # would be served to a later run of the old content
    assert _problems(e.value) == [("preferences.jsonl", 0, "<file>")]
    assert not (tmp_path / "out" / "data").exists()


@pytest.mark.parametrize("words", [2, 400])
def test_a_pretrain_table_too_short_for_one_ptx_block_is_refused_by_the_import(tmp_path, words):
    from instructflow.tasks import dataset_stage
    from instructflow.tasks.dataset import DatasetConfig
    from tests.tiny_models import tiny_llama

    # given a dataset whose pretrain table's train documents hold a few tokens, or many
    folder = write_pairwise_dataset(tmp_path / "pw", n=60)
    docs = [{"text": " ".join(["apple river"] * (words // 2))} for _ in range(3)]
    (folder / "pretrain.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    texts = [r["prompt"] + " " + r["chosen"] for r in _lines(folder / "preferences.jsonl")]
    model = tiny_llama(tmp_path / "llama", texts)

    # when the import stage reads it (as a run from the Prefect form does, with no CLI
    # preflight before it) for a PPO-ptx that packs blocks of 64 tokens
    def imported():
        return dataset_stage.import_dataset(
            folder, str(model), DatasetConfig(), 8, tmp_path / "out", ptx_block_size=64
        )

    if words > 64:  # then a table that fills a block imports
        assert imported()["summary"]["tables"]["pretrain"]["rows"] == 3
        return
    # then a table that fills none is refused, naming the file, the tokens and the setting:
    # PPO-ptx crashed on it after SFT, the reward model and PPO had trained
    with pytest.raises(TableError, match="fewer than one block of ppo.ptx_block_size = 64") as e:
        imported()
    assert _problems(e.value) == [("pretrain.jsonl", 0, "text")]
