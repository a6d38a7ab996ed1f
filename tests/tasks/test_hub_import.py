"""instructflow data from-hub: a Hub snapshot's split files gathered into one table."""

import json
from pathlib import Path

import pandas as pd
import pytest

from instructflow.flows.cli import main
from instructflow.tasks.dataset import load_dataset
from instructflow.tasks.hub_import import HubImportError, gather
from instructflow.tasks.tables import TableError
from tests.own_data import write_pairwise_dataset


def _pairs(tmp_path: Path) -> list[dict]:
    folder = write_pairwise_dataset(tmp_path / "source", n=60)
    return [json.loads(line) for line in (folder / "preferences.jsonl").read_text().splitlines()]


def _snapshot(tmp_path: Path, parts: dict[str, list[list[dict]]]) -> Path:
    """A snapshot as the Hub's download leaves it: data/<split>-NNNNN-of-MMMMM.parquet."""
    data = tmp_path / "snapshot" / "data"
    data.mkdir(parents=True)
    for split, shards in parts.items():
        for i, rows in enumerate(shards):
            pd.DataFrame(rows).to_parquet(data / f"{split}-{i:05d}-of-{len(shards):05d}.parquet")
    return data.parent


def test_every_shard_of_every_split_lands_in_one_table_with_its_split(tmp_path):
    # given train in two shards, validation and test in one each
    rows = _pairs(tmp_path)
    parts = {"train": [rows[:20], rows[20:40]], "validation": [rows[40:50]], "test": [rows[50:]]}
    snapshot = _snapshot(tmp_path, parts)
    # when gathered
    counts = gather(snapshot, tmp_path / "mydata")
    # then every row is there once, in shard order, its split named as this project names it
    assert counts == {"test": 10, "train": 40, "validation": 10}
    table = pd.read_parquet(tmp_path / "mydata" / "preferences.parquet")
    by_split = {s: list(table[table["split"] == s]["chosen"]) for s in ("train", "valid", "test")}
    assert by_split == {
        "train": [r["chosen"] for r in rows[:40]],
        "valid": [r["chosen"] for r in rows[40:50]],
        "test": [r["chosen"] for r in rows[50:]],
    }
    # and a run reads it, each row in the split the Hub gave it
    dataset = load_dataset(tmp_path / "mydata")
    splits = [dataset.split_of[id(i)] for i in dataset.preferences]
    assert splits == ["test"] * 10 + ["train"] * 40 + ["valid"] * 10


def test_splits_of_other_names_need_a_word_and_may_be_left_out(tmp_path):
    # given ultrafeedback_binarized's split names
    rows = _pairs(tmp_path)
    parts = {"train_prefs": [rows[:50]], "test_prefs": [rows[50:]], "train_sft": [rows[:5]]}
    snapshot = _snapshot(tmp_path, parts)
    # then without a mapping each such split is named, with the flag that maps it
    with pytest.raises(HubImportError, match=r"'test_prefs', .*--split test_prefs="):
        gather(snapshot, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    # and with one, the SFT split is left out and the others renamed
    mapping = {"train_prefs": "train", "test_prefs": "test", "train_sft": "skip"}
    assert gather(snapshot, tmp_path / "b", mapping=mapping) == {
        "test_prefs": 10, "train_prefs": 50, "train_sft": 0,
    }  # fmt: skip
    table = pd.read_parquet(tmp_path / "b" / "preferences.parquet")
    assert table["split"].value_counts().to_dict() == {"train": 50, "test": 10}


def test_every_split_that_needs_a_word_is_named_at_once(tmp_path, capsys):
    # given ultrafeedback_binarized's six split names, none of them train, valid or test
    rows = _pairs(tmp_path)
    names = ("train_prefs", "test_prefs", "train_sft", "test_sft", "train_gen", "test_gen")
    snapshot = _snapshot(tmp_path, {name: [rows[:10]] for name in names})
    # then one refusal names every one with its flag, not the first alone (six tries to
    # learn them, one by one)
    assert main(["data", "from-hub", str(snapshot), str(tmp_path / "out")]) == 2
    said = capsys.readouterr().err
    assert len(said.strip().splitlines()) == 1
    for name in names:
        assert f"--split {name}=train|valid|test|hash|skip" in said
    # and a mapping that names some of them is told about the rest only
    argv = ["data", "from-hub", str(snapshot), str(tmp_path / "out"), "--split", "test_gen=skip"]
    assert main(argv) == 2
    said = capsys.readouterr().err
    assert "test_gen=" not in said and "--split train_gen=" in said


def test_a_missing_shard_or_an_existing_table_is_refused(tmp_path):
    rows = _pairs(tmp_path)
    snapshot = _snapshot(tmp_path, {"train": [rows[:20], rows[20:40], rows[40:]]})
    (snapshot / "data" / "train-00001-of-00003.parquet").unlink()
    with pytest.raises(HubImportError, match="split 'train': its shards do not make a whole"):
        gather(snapshot, tmp_path / "out")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "preferences.parquet").write_bytes(b"mine")
    other = tmp_path / "other"
    other.mkdir()
    pd.DataFrame(rows).to_json(other / "train.jsonl", orient="records", lines=True)
    with pytest.raises(HubImportError, match="preferences.parquet exists"):
        gather(other, tmp_path / "full")
    assert (tmp_path / "full" / "preferences.parquet").read_bytes() == b"mine"


def test_the_command_prints_what_it_took_and_refuses_in_one_line(tmp_path, capsys):
    rows = _pairs(tmp_path)
    snapshot = _snapshot(tmp_path, {"train_prefs": [rows[:50]], "test": [rows[50:]]})
    out = tmp_path / "mine"
    assert main(["data", "from-hub", str(snapshot), str(out)]) == 2
    assert "--split train_prefs=train|valid|test|hash|skip" in capsys.readouterr().err
    assert main(["data", "from-hub", str(snapshot), str(out), "--split", "train_prefs"]) == 2
    argv = ["data", "from-hub", str(snapshot), str(out), "--split", "train_prefs=train"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "train_prefs: 50 rows" in printed and f"wrote {out / 'preferences.parquet'}" in printed


def test_anthropic_hh_rlhf_gzipped_json_lines_are_read(tmp_path):
    # given Anthropic/hh-rlhf's layout: harmless-base/{train,test}.jsonl.gz of chosen/rejected
    rows = _pairs(tmp_path)
    folder = tmp_path / "hh-rlhf" / "harmless-base"
    folder.mkdir(parents=True)
    for split, part in (("train", rows[:50]), ("test", rows[50:])):
        pd.DataFrame(part).to_json(folder / f"{split}.jsonl.gz", orient="records", lines=True)
    (folder / "README.md").write_text("not a table")
    # then both splits are read, unzipped
    assert gather(folder, tmp_path / "hh") == {"test": 10, "train": 50}
    table = pd.read_parquet(tmp_path / "hh" / "preferences.parquet")
    assert list(table["chosen"]) == [r["chosen"] for r in rows[50:] + rows[:50]]


def test_ultrafeedback_without_a_validation_split_can_hash_its_train_split(tmp_path):
    # given ultrafeedback_binarized's layout: train_prefs and test_prefs, no validation split
    rows = _pairs(tmp_path)
    parts = {"train_prefs": [rows[:50]], "test_prefs": [rows[50:]], "train_sft": [rows[:5]]}
    snapshot = _snapshot(tmp_path, parts)
    # when train_prefs is taken as train, every row states its split and none is valid:
    # the refusal said to change dataset.valid_fraction, which applies to no row here
    stated = {"train_prefs": "train", "test_prefs": "test", "train_sft": "skip"}
    gather(snapshot, tmp_path / "stated", mapping=stated)
    with pytest.raises(TableError) as e:
        load_dataset(tmp_path / "stated")
    (said,) = [p.message for p in e.value.problems if "valid split" in p.message]
    assert "change dataset.valid_fraction" not in said
    assert "every row states its split" in said and "=hash" in said
    # then `hash` leaves those rows' split to the stable hash, as rows without a split column
    hashed = {"train_prefs": "hash", "test_prefs": "test", "train_sft": "skip"}
    assert gather(snapshot, tmp_path / "hashed", mapping=hashed)["train_prefs"] == 50
    table = pd.read_parquet(tmp_path / "hashed" / "preferences.parquet")
    assert table["split"].isna().sum() == 50 and (table["split"] == "test").sum() == 10
    dataset = load_dataset(tmp_path / "hashed")
    splits = [dataset.split_of[id(i)] for i in dataset.preferences]
    assert splits[:10] == ["test"] * 10  # test_prefs keeps its split
    assert {"train", "valid", "test"} <= set(splits[10:])  # train_prefs: by hash, valid too


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl.gz", ".jsonl"])
def test_a_shard_cut_off_is_named_in_one_line_not_a_traceback(tmp_path, capsys, suffix):
    # given a snapshot whose test shard's download stopped halfway
    rows = _pairs(tmp_path)
    data = tmp_path / "snapshot" / "data"
    data.mkdir(parents=True)
    for split, part in (("train", rows[:50]), ("test", rows[50:])):
        shard = data / f"{split}-00000-of-00001{suffix}"
        if suffix == ".parquet":
            pd.DataFrame(part).to_parquet(shard)
        else:
            pd.DataFrame(part).to_json(shard, orient="records", lines=True)
    shard = data / f"test-00000-of-00001{suffix}"
    # (JSON Lines: its last line cut, a cut between two lines leaves whole rows to read)
    cut = shard.stat().st_size // 2 if suffix != ".jsonl" else shard.stat().st_size - 5
    shard.write_bytes(shard.read_bytes()[:cut])
    # when it is gathered
    out = tmp_path / "mine"
    assert main(["data", "from-hub", str(data.parent), str(out)]) == 2
    # then one line names the shard (it was pyarrow's or pandas' traceback, exit 1)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"instructflow: {shard}: not readable, cut off or damaged?")
    assert line.endswith("download it again") and not out.exists()
