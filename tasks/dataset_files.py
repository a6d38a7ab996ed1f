"""The files of a user's dataset directory: which tables it holds, and their rows.

A table is ``<name>.jsonl`` or ``<name>.parquet`` for a name in
instructflow.tasks.dataset_schemas' TABLES and OPTIONAL_TABLES; rows come
back as (row number, object) pairs, Parquet cells as JSON would give them,
so both formats go through the same checks.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from instructflow.tasks import dataset_schemas as ds
from instructflow.tasks.dataset_names import (
    near_table,
    not_read,
    shard_file_hint,
    shard_table,
    split_file,
    split_file_hint,
)
from instructflow.tasks.json_lines import _read_rows
from instructflow.tasks.tables import Problem

FORMATS = (".jsonl", ".parquet")


def missing_folder(folder: Path) -> Problem | None:
    """A dataset directory that is not there (else every table would be 'not found')."""
    if folder.is_dir():
        return None
    what = "not a directory" if folder.exists() else "no such directory"
    if folder.is_file():  # a table passed for its dataset: `--data mydata/preferences.jsonl`
        what += f": a dataset is the folder of its tables ({folder.parent}), one file each"
    if folder.with_name(folder.name + ".dvc").is_file():  # a clone that has not pulled it
        what += f" (it is tracked by {folder.name}.dvc: `dvc pull {folder}` fetches it)"
    return Problem(str(folder), 0, "data", what)


def find_tables(folder: Path) -> tuple[dict[str, Path], list[Problem]]:
    """Each known table's file; a table given twice (JSONL and Parquet) or no preferences is a problem."""
    if (missing := missing_folder(folder)) is not None:
        return {}, [missing]
    found: dict[str, Path] = {}
    problems: list[Problem] = []
    for name in (*ds.TABLES, *ds.OPTIONAL_TABLES):
        paths = [folder / f"{name}{ext}" for ext in FORMATS if (folder / f"{name}{ext}").exists()]
        if len(paths) > 1:
            problems.append(Problem(str(folder), 0, name, "table given as both JSONL and Parquet"))
        elif paths:
            found[name] = paths[0]
    # Given twice, it is there (refused above): not also "no preferences.jsonl", nor its own
    # two files named as near misses of themselves.
    if "preferences" not in found and not any(p.field == "preferences" for p in problems):
        message = "no preferences.jsonl or preferences.parquet"
        for name in unread_files(folder, found.values()):  # a typo in its name, say
            if shard_table(name) == "preferences":  # the table cut in shards, as the Hub does
                message += f" ({shard_file_hint(name)})"
            elif (meant := near_table(name, found)) and meant.startswith("preferences."):
                message += f" ({not_read(name, meant)})"
            elif (hint := split_file_hint(name)) and split_file(name)[0] in (None, "preferences"):
                message += f" ({hint})"  # Hub-style files, one per split
            elif name.endswith("/") and (inside := _split_files_in(folder / name)):
                # a Hub snapshot keeps them a level down: data/train-00000-of-00001.parquet
                shown = ", ".join(inside[:3]) + (", ..." if len(inside) > 3 else "")
                message += (
                    f" ({name} holds files named as splits, not read: {shown}; tables are read"
                    " from the directory itself, one file each (preferences.jsonl, ...) whose"
                    " rows name their split in a `split` column; `instructflow data from-hub"
                    f" {folder} DIR` gathers them into DIR/preferences.parquet)"
                )
        problems.append(Problem(str(folder), 0, "preferences", message))
    return found, problems


def _split_files_in(folder: Path) -> list[str]:
    """The names of the files in `folder` named as one split of a table."""
    try:
        names = sorted(entry.name for entry in folder.iterdir() if entry.is_file())
    except OSError:  # unreadable: nothing to point to
        return []
    return [n for n in names if split_file(n) is not None]


def unread_files(folder: Path, read: Iterable[Path]) -> list[str]:
    """What `folder` holds besides the tables read (hidden files such as .gitignore aside)."""
    read = list(read)
    return sorted(
        entry.name + ("/" if entry.is_dir() else "")
        for entry in folder.iterdir()
        if not entry.name.startswith(".") and not _is_one_of(entry, read)
    )


def _is_one_of(entry: Path, read: list[Path]) -> bool:
    # samefile, not names: on a case-insensitive disk Preferences.jsonl is preferences.jsonl
    try:
        return any(entry.samefile(r) for r in read)
    except OSError:  # a broken link: not a table that was read
        return False


def _plain(value: Any) -> Any:
    """Parquet cells as JSON would give them: arrays -> lists, numpy scalars -> Python, NaN -> None."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def read_rows(path: Path) -> tuple[list[tuple[int, dict]], list[Problem]]:
    """(row number, object) pairs: the line number in JSONL, the 1-based row in Parquet."""
    if path.suffix == ".jsonl":
        return _read_rows(path)
    try:
        frame = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a broken file
        # The problem names the file already; pyarrow's message repeats its path.
        why = str(e).replace(f"Could not open Parquet input source '{path}': ", "")
        return [], [Problem(str(path), 0, "<file>", f"not a readable Parquet file: {why}")]
    records = frame.to_dict("records")
    return [(i + 1, {k: _plain(v) for k, v in r.items()}) for i, r in enumerate(records)], []
