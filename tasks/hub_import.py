"""A Hub dataset's files, kept per split, gathered into one table of this project's layout.

The Hub keeps a dataset as files per split: `data/train-00000-of-00002.parquet`
(what `huggingface-cli download --repo-type dataset` leaves), `test.jsonl`, and
names of its own (ultrafeedback_binarized: train_prefs, test_prefs, train_sft, ...).
A dataset here is one file per table whose rows name their split (docs/own-data.md).
`gather` reads every shard of every split in order, refuses a split
with a shard missing (half a table would train without a word), and writes
`<out>/<table>.parquet` with a `split` column. A split named train, test,
validation (valid, val, dev) keeps its name; any other needs a word from the user
(`NAME=train|valid|test|hash|skip`): a Hub split of another table (train_sft beside
train_prefs) must not land in this one. `hash` leaves the rows' split empty, for the
stable hash to place them as rows without a split column (`dataset.valid_fraction`,
`test_fraction`): a dataset with no validation split (ultrafeedback_binarized) gets one.
"""

from pathlib import Path

import pandas as pd

from instructflow.tasks.dataset_names import SHARD_RE
from instructflow.tasks.schemas import SPLIT_ALIASES, SPLITS

# .json and .jsonl.gz: JSON Lines as many Hub datasets store them (Anthropic/hh-rlhf: train.jsonl.gz)
FORMATS = (".parquet", ".jsonl", ".jsonl.gz", ".json")
SKIP = "skip"
HASH = "hash"  # the split column left empty: the stable hash decides


class HubImportError(ValueError):
    """What stops the import, in one line that names the folder, split or file."""


def split_files(snapshot: Path) -> dict[str, list[Path]]:
    """Each split's files, shards in order, in `snapshot` or its `data/` folder."""
    folder = snapshot / "data" if (snapshot / "data").is_dir() else snapshot
    if not folder.is_dir():
        raise HubImportError(f"{snapshot}: no such directory")
    shards: dict[str, list[tuple[int, int, Path]]] = {}
    for path in sorted(folder.iterdir()):
        suffix = next((f for f in FORMATS if path.name.endswith(f)), None)
        if suffix is None or not path.is_file():
            continue
        stem = path.name.removesuffix(suffix)
        match = SHARD_RE.match(stem)  # the Hub's <split>-00000-of-00002
        split, index, count = (
            (match["name"], int(match["index"]), int(match["count"])) if match else (stem, 0, 1)
        )
        shards.setdefault(split, []).append((index, count, path))
    if not shards:
        raise HubImportError(f"{folder}: no .parquet or .jsonl files")
    return {split: _complete(split, found) for split, found in shards.items()}


def _complete(split: str, found: list[tuple[int, int, Path]]) -> list[Path]:
    """The split's files in shard order; every shard there, in one format."""
    names = ", ".join(path.name for _, _, path in found)
    counts = {count for _, count, _ in found}
    have = sorted(index for index, _, _ in found)
    if len(counts) != 1 or have != list(range(counts.pop())):
        raise HubImportError(f"split {split!r}: its shards do not make a whole ({names})")
    if len({path.suffix for _, _, path in found}) > 1:
        raise HubImportError(f"split {split!r}: given in two formats ({names})")
    return [path for _, _, path in sorted(found, key=lambda f: f[0])]


def ours(split: str, mapping: dict[str, str]) -> str:
    """This project's split (or "skip") for the Hub's `split`."""
    if split in mapping:
        return mapping[split]
    if split in SPLITS or split in SPLIT_ALIASES:
        return SPLIT_ALIASES.get(split, split)
    raise unnamed_splits([split])


def unnamed_splits(splits: list[str]) -> HubImportError:
    """The refusal for Hub splits that need a word each, every one named with its flag (one
    at a time, ultrafeedback_binarized's six splits took six tries)."""
    flags = " ".join(f"--split {s}=train|valid|test|{HASH}|{SKIP}" for s in splits)
    if len(splits) == 1:
        return HubImportError(
            f"split {splits[0]!r} is not one of train, valid, test (or validation, val, dev):"
            f" say which it is, or leave it out: {flags}"
        )
    names = ", ".join(repr(s) for s in splits)
    return HubImportError(
        f"splits {names} are not among train, valid, test (or validation, val, dev): say which"
        f" each is, or leave it out: {flags}"
    )


def _read(path: Path) -> pd.DataFrame:
    """A shard's rows; one cut off or damaged (a download that stopped) is named in one line,
    not a pyarrow or JSON traceback."""
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        # dtype=False: ids stay as written ("007" is not 7); .gz is read compressed
        return pd.read_json(path, lines=True, dtype=False, convert_dates=False, compression="infer")
    except (OSError, EOFError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise HubImportError(
            f"{path}: not readable, cut off or damaged? ({first}): download it again"
        ) from None


def gather(
    snapshot: Path, out: Path, table: str = "preferences", mapping: dict[str, str] | None = None
) -> dict[str, int]:
    """Write `<out>/<table>.parquet`: every kept split's rows with a `split` column.

    Returns the rows taken from each Hub split (0 for one skipped).
    """
    mapping = mapping or {}
    if bad := {k: v for k, v in mapping.items() if v not in (*SPLITS, HASH, SKIP)}:
        raise HubImportError(f"--split {bad}: a split maps to train, valid, test, {HASH} or {SKIP}")
    files = split_files(snapshot)
    if unknown := sorted(set(mapping) - set(files)):
        raise HubImportError(f"--split names {unknown}, not splits of {snapshot}: {sorted(files)}")
    unnamed = [s for s in files if s not in mapping and s not in (*SPLITS, *SPLIT_ALIASES)]
    if unnamed:
        raise unnamed_splits(unnamed)
    target = out / f"{table}.parquet"
    if target.exists():
        raise HubImportError(f"{target} exists: remove it or choose another folder")
    frames, rows = [], {}
    for split, paths in files.items():
        kept = ours(split, mapping)
        frame = pd.concat([_read(p) for p in paths], ignore_index=True)
        rows[split] = 0 if kept == SKIP else len(frame)
        if kept == SKIP:
            continue
        if "split" in frame.columns:
            raise HubImportError(f"split {split!r}: its rows have a split column already")
        frames.append(frame.assign(split=None if kept == HASH else kept))
    if not frames:
        raise HubImportError(f"{snapshot}: every split was left out")
    out.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")  # whole or not at all
    table = pd.concat(frames, ignore_index=True)
    if table["split"].isna().all():  # every split hashed: no split column, as a plain table
        table = table.drop(columns="split")
    table.to_parquet(partial, index=False)
    partial.replace(target)
    return rows
