"""Columns and files of a dataset directory that are not read, and the names they nearly are.

A column no schema of its table reads is ignored, and a file that is not a
table is not read: both are listed (`instructflow data validate`, the run's
log, the report). When such a name differs from a known one only in case,
separators or a final s (`Split`, `userId`, `user-id`, `demonstration.jsonl`,
`prompts.json`), a warning names the one it was probably meant to be: an
ignored `split` column silently re-splits the data by hash, an unread
demonstrations table silently trains SFT on the preferred responses. A file
named as one split of a table (`preferences_test.jsonl`, Hub-style) gets a
warning saying where its rows go: unread, they are silently missing from
that split.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from instructflow.tasks import dataset_schemas as ds
from instructflow.tasks.schemas import SPLIT_ALIASES, SPLITS

_COMMON = ("prompt_id", "user_id", "split", "category", "labeler_id")
# The columns each table's schemas read (instructflow.tasks.dataset_schemas), and TRL's
# `completion` (instructflow.tasks.trl_forms); tests/tasks/test_dataset_names.py
# checks this against the schemas.
TABLE_COLUMNS = {
    "prompts": ("prompt", "messages", *_COMMON),
    "demonstrations": ("prompt", "response", "messages", "completion", *_COMMON),
    "preferences": (
        "prompt",
        "responses",
        "ranking",
        "chosen",
        "rejected",
        "score_chosen",
        "score_rejected",
        "margin",
        *_COMMON,
    ),
    "pretrain": ("text", "split"),
    "flan": ("prompt", "response"),
    "t0": ("prompt", "response"),
}
TABLE_NAMES = (*ds.TABLES, *ds.OPTIONAL_TABLES)
PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")


def _key(name: str) -> str:
    """A name without case or separators: Split, userId and user-id become split, userid."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def one_typo(a: str, b: str) -> bool:
    """Whether b is a with one letter left out, added, changed or swapped with the next."""
    if abs(len(a) - len(b)) > 1 or a == b:
        return False
    # From the first letter where they differ, the rest must match after one edit there.
    at = next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )
    changed = a[at + 1 :] == b[at + 1 :]
    added = a[at:] == b[at + 1 :]
    left_out = a[at + 1 :] == b[at:]
    swapped = a[at : at + 2][::-1] == b[at : at + 2] and a[at + 2 :] == b[at + 2 :]
    return changed or added or left_out or swapped


def nearest(name: str, known: Iterable[str]) -> str | None:
    """The known name `name` nearly is: the same key, else the same key but for a final s,
    else (names of 5 or more letters) the same key but for one typo (rejcted, prefernces)."""
    known = list(known)
    for same in (_key, lambda n: _key(n).removesuffix("s")):
        matches = [k for k in known if same(k) == same(name)]
        if matches:
            return matches[0]
    if len(_key(name)) >= 5:
        return next((k for k in known if one_typo(_key(name), _key(k))), None)
    return None


def near_column(column: str, table: str) -> str | None:
    """The column of `table` an ignored `column` was probably meant to be, if any."""
    known = TABLE_COLUMNS[table]
    return None if column in known else nearest(column, known)


def near_table(file_name: str, found: Iterable[str]) -> str | None:
    """The table file an unread file was probably meant to be, unless that table is there."""
    stem, _, suffix = file_name.partition(".")
    table = nearest(stem, [t for t in TABLE_NAMES if t not in set(found)])
    if table is None:
        return None
    return table + (".parquet" if f".{suffix.lower()}" in PARQUET_SUFFIXES else ".jsonl")


def not_read(file_name: str, meant: str) -> str:
    """What to do with `file_name`, not read, that was probably meant as the table `meant`:
    rename it, unless it is compressed or CSV, which a rename (as "did you mean
    preferences.jsonl?" told a trial's preferences.csv and preferences.jsonl.gz) leaves a file
    the table's reader cannot parse."""
    lower = file_name.lower()
    if lower.endswith(".gz"):
        return f"{file_name} is not read: decompress it to {meant} (gunzip -k {file_name})"
    if lower.endswith((".csv", ".tsv")):
        sep = ", sep='\\t'" if lower.endswith(".tsv") else ""
        parquet = meant.partition(".")[0] + ".parquet"
        return (
            f"{file_name} is not read: tables are JSON Lines or Parquet, write it as {parquet}"
            f" (pandas.read_csv('{file_name}'{sep}).to_parquet('{parquet}'))"
        )
    return f"{file_name} is not read: did you mean {meant}?"


# Hub datasets come as one file per split (train.jsonl, test.jsonl; ultrafeedback_binarized's
# train_prefs / test_prefs; data/train-00000-of-00001.parquet). A table here is one file whose
# rows say their split, so such files are not read: these words tell them apart.
SPLIT_WORDS = {split: split for split in SPLITS} | SPLIT_ALIASES
TABLE_WORDS = {"prefs": "preferences", "pairs": "preferences", "comparisons": "preferences",
               "sft": "demonstrations", "demos": "demonstrations"}  # fmt: skip


def split_file(file_name: str) -> tuple[str | None, str] | None:
    """(table or None, split) of a file named as one split of a table (`preferences_test.jsonl`,
    `train_prefs.parquet`, `test.jsonl`), else None."""
    stem, _, suffix = file_name.partition(".")
    if f".{suffix.lower()}" not in (".jsonl", ".json", *PARQUET_SUFFIXES):
        return None
    words = [w for w in re.split(r"[^a-z0-9]+", stem.lower()) if w]
    split = next((SPLIT_WORDS[w] for w in words if w in SPLIT_WORDS), None)
    if split is None:
        return None
    tables = [TABLE_WORDS.get(w) or nearest(w, TABLE_NAMES) for w in words]
    return next((t for t in tables if t), None), split


# The Hub (datasets' push_to_hub, save_to_disk exports) cuts a large table into shards,
# preferences-00000-of-00002.parquet ...; only the file named as the table is read, so the
# other shards' rows would be missing without a word.
SHARD_RE = re.compile(r"^(?P<name>.+?)[-_](?P<index>\d+)-of-(?P<count>\d+)$")


def shard_table(file_name: str) -> str | None:
    """The table of a file named as one of its shards (`preferences-00001-of-00002.parquet`)."""
    stem, _, suffix = file_name.partition(".")
    if f".{suffix.lower()}" not in (".jsonl", ".json", *PARQUET_SUFFIXES):
        return None
    match = SHARD_RE.match(stem)
    return nearest(match["name"], TABLE_NAMES) if match else None


FROM_HUB = " (`instructflow data from-hub` gathers a Hub download's split files into one)"


def shard_file_hint(file_name: str) -> str | None:
    """Where the rows of a file named as one shard of a table go, or None."""
    if (table := shard_table(file_name)) is None:
        return None
    parquet = f".{file_name.partition('.')[2].lower()}" in PARQUET_SUFFIXES
    return (
        f"{file_name} is not read: it is a shard of the {table} table, and a table is one"
        f" file: put its rows in {table}{'.parquet' if parquet else '.jsonl'}"
    )


def split_file_hint(file_name: str) -> str | None:
    """How to give the rows of a file named as one split of a table, or None."""
    if (found := split_file(file_name)) is None:
        return None
    table, split = found
    into = f"{table}.jsonl" if table else "its table's file (preferences.jsonl, ...)"
    return (
        f"{file_name} is not read: a table is one file whose rows name their split; "
        f'put its rows in {into} with "split": "{split}"{FROM_HUB}'
    )


def meant_columns(columns: Iterable[str], table: str) -> str:
    """' (did you mean ...?)' for the near-miss columns of a table that was refused, else ''."""
    pairs = [(c, near_column(c, table)) for c in sorted(columns)]
    meant = [f"{known!r} for {c!r}" for c, known in pairs if known]
    return f" (did you mean {', '.join(meant)}?)" if meant else ""


# The columns of one shape of preferences only: a table read in the other shape does not want
# them (Dahoas-style rows have a `response` beside chosen/rejected: "did you mean
# 'responses'?" would turn the table into a ranking missing its `ranking`).
SHAPE_ONLY = {"ranking": ("responses", "ranking"), "pairs": ("chosen", "rejected")}


def _of_another_shape(known: str, table: str, shape: str | None) -> bool:
    own = "ranking" if shape == "ranking" else "pairs"
    return table == "preferences" and any(
        known in columns for name, columns in SHAPE_ONLY.items() if name != own
    )


def naming_warnings(summary: dict, found: Iterable[str]) -> list[str]:
    """A warning for each ignored column and unread file whose name nearly is a known one
    (`found`: the tables the directory has); not for a column of the preferences shape the
    table is not in."""
    warnings = []
    shape = summary.get("preference_shape")
    for table, columns in summary["ignored_columns"].items():
        for column in columns:
            known = near_column(column, table)
            if known and not _of_another_shape(known, table, shape):
                file = summary["tables"][table]["file"]
                warnings.append(f"{file}: column {column!r} is ignored: did you mean {known!r}?")
    for name in summary["unread_files"]:
        if hint := shard_file_hint(name):  # its rows are silently missing from the table
            warnings.append(hint)
        elif table := near_table(name, found):
            warnings.append(not_read(name, table))
        elif hint := split_file_hint(name):  # its rows are silently not in that split
            warnings.append(hint)
    return warnings


def notes(summary: dict) -> list[str]:
    """The lines that list what was not read, then the warnings; none when all was read."""
    ignored_columns, unread = summary.get("ignored_columns", {}), summary.get("unread_files", [])
    ignored = "; ".join(
        f"{summary['tables'][t]['file']}: {', '.join(columns)}"
        for t, columns in ignored_columns.items()
    )
    lines = [f"ignored columns: {ignored}"] if ignored else []
    keys = "; ".join(  # conversation messages' keys other than role and content
        f"{summary['tables'][t]['file']}: "
        + ", ".join(f"{key} ({n} messages)" for key, n in sorted(counts.items()))
        for t, counts in summary.get("ignored_message_keys", {}).items()
    )
    if keys:
        lines.append(f"ignored message keys: {keys}")
    if unread:
        lines.append(f"files not read (not a table): {', '.join(unread)}")
    return lines + [f"warning: {w}" for w in summary.get("naming_warnings", [])]
