"""A user's dataset as new users write it: encodings, empty tables, misnamed files and columns."""

import codecs
import json
from pathlib import Path

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


def test_a_carriage_return_inside_a_text_is_still_refused_naming_row_and_field(tmp_path):
    # given a response holding a Windows line break ("\r\n" escaped in the JSON string)
    folder = write_pairwise_dataset(tmp_path / "pw", n=60)
    path = folder / "preferences.jsonl"
    rows = _lines(path)
    rows[4]["chosen"] = "apple\r\napple"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # then it is refused as a control character (only \n and \t are allowed), on that cell
    with pytest.raises(TableError, match="control character") as e:
        load_dataset(folder)
    assert _problems(e.value) == [("preferences.jsonl", 5, "chosen")]
