"""Reading, validating and writing the pipeline's JSONL tables.

Every stage reads its inputs through ``load_table``: a bad table stops the run
before any training with a ``TableError`` that lists each problem as
``<file> row <n> field '<field>': <message>``, where the row is the 1-based
line number in the JSONL file, so ``sed -n <n>p <file>`` shows the culprit.
"""

from __future__ import annotations

import codecs
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

from instructflow.tasks import schemas

LINE = "<line>"  # field of problems that concern a whole line, not one value
MAX_LISTED = 20  # problems listed in a TableError's message

# The field a too-long sequence is reported on: where the sequence ends.
TOKEN_FIELD = {
    "prompts": "prompt",
    "demonstrations": "response",
    "comparisons": "responses",
    "pairwise": "prompt",
    "pretrain": "text",
    "public_suite": "context",
    "mixture": "response",
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a table. ``row`` is the 1-based line number; 0 = whole file."""

    file: str
    row: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file} row {self.row}" if self.row else self.file
        return f"{where} field {self.field!r}: {self.message}"


class TableError(ValueError):
    """A table failed validation; ``problems`` holds every problem found."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        # Sorted by file and row (stable, so one row's problems keep the
        # order they were found in) so the listed ones are the first lines.
        self.problems = sorted(problems, key=lambda p: (p.file, p.row))
        n = len(self.problems)
        lines = [f"{n} problem{'' if n == 1 else 's'} found:"]
        lines += [str(p) for p in self.problems[:MAX_LISTED]]
        if n > MAX_LISTED:
            lines.append(f"... and {n - MAX_LISTED} more")
        super().__init__("\n".join(lines))


def show_value(value: Any, limit: int = 80) -> str:
    """A short repr of a bad value for a message."""
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"a list of {len(value)}: {text}" if isinstance(value, list) else text


def _has_escaped_bytes(value: Any) -> bool:
    """Whether a value decoded with surrogateescape holds an undecodable byte."""
    if isinstance(value, str):
        return any("\udc80" <= c <= "\udcff" for c in value)
    if isinstance(value, list):
        return any(_has_escaped_bytes(v) for v in value)
    if isinstance(value, dict):
        return any(_has_escaped_bytes(k) or _has_escaped_bytes(v) for k, v in value.items())
    return False


def _bad_utf8_field(line: bytes) -> str:
    """The top-level key whose key or value holds the invalid bytes, else LINE."""
    try:
        obj = json.loads(line.decode("utf-8", "surrogateescape"))
    except ValueError:
        return LINE
    if isinstance(obj, dict):
        for key, value in obj.items():
            if _has_escaped_bytes(key) or _has_escaped_bytes(value):
                return key
    return LINE


def _malformed(error: json.JSONDecodeError, cut_off: bool) -> str:
    # json's messages that point at a position end in "at" ("Unterminated string starting
    # at"); a plain " at column" made them read "starting at at column 73".
    message = f"malformed JSON: {error.msg.removesuffix(' at')} at column {error.colno}"
    if cut_off:  # the file's last line, and no line break after it
        message += "; the file ends inside this line: cut off by a write or download that stopped?"
    return message


def _parse_line(
    line: bytes, file: str, row: int, cut_off: bool = False
) -> tuple[dict[str, Any] | None, list[Problem]]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        message = f"invalid UTF-8 byte 0x{line[e.start]:02x} at byte {e.start + 1} of the line"
        return None, [Problem(file, row, _bad_utf8_field(line), message)]

    duplicates: list[str] = []

    def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        # json.loads silently keeps the last of repeated keys; a repeat is
        # almost always a writer bug, so surface it.
        obj: dict[str, Any] = {}
        for key, value in pairs:
            if key in obj:
                duplicates.append(key)
            obj[key] = value
        return obj

    try:
        obj = json.loads(text, object_pairs_hook=no_duplicate_keys)
    except json.JSONDecodeError as e:
        return None, [Problem(file, row, LINE, _malformed(e, cut_off))]
    if not isinstance(obj, dict):
        return None, [Problem(file, row, LINE, f"expected a JSON object, got {type(obj).__name__}")]
    return obj, [Problem(file, row, key, "key appears more than once") for key in duplicates]


def _read_rows(
    path: str | os.PathLike[str],
) -> tuple[list[tuple[int, dict[str, Any]]], list[Problem]]:
    """Parse a JSONL file into (line number, object) pairs plus the problems found."""
    file = os.fspath(path)
    # A byte-order mark (Windows editors, Excel's "UTF-8" export) is not part of
    # the first row: pandas and Hugging Face datasets skip it too (utf-8-sig).
    data = Path(path).read_bytes()
    lines = data.removeprefix(codecs.BOM_UTF8).split(b"\n")
    while lines and not lines[-1].strip():  # trailing newline / blank lines are fine
        lines.pop()
    if (array := _json_array(lines, file)) is not None:
        return [], [array]
    rows: list[tuple[int, dict[str, Any]]] = []
    problems: list[Problem] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            problems.append(Problem(file, number, LINE, "blank line"))
            continue
        # a last line with no line break after it, if malformed, is likely cut off
        cut_off = number == len(lines) and not data.endswith(b"\n")
        obj, found = _parse_line(line, file, number, cut_off)
        problems += found
        if obj is not None:
            rows.append((number, obj))
    return rows, problems


JSON_ARRAY = (
    "holds one JSON array, not JSON Lines (one object per line): write each element on a "
    "line of its own (`jq -c '.[]' FILE`, or pandas' to_json(orient='records', lines=True))"
)


def _json_array(lines: list[bytes], file: str) -> Problem | None:
    """One problem for a file that is a whole JSON array (an export's default, or a .json
    renamed .jsonl as the near-miss warning suggests), instead of one per line: a trial's
    240-row array gave 1442 'malformed JSON' lines and none said why."""
    first = next((line.strip() for line in lines if line.strip()), b"")
    if not first.startswith(b"["):
        return None
    try:
        value = json.loads(b"\n".join(lines))
    except ValueError:  # not one array after all: its lines say what is wrong
        return None
    return Problem(file, 0, LINE, JSON_ARRAY) if isinstance(value, list) else None


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSONL file of objects; raise TableError naming every bad line."""
    rows, problems = _read_rows(path)
    if problems:
        raise TableError(problems)
    return [obj for _, obj in rows]


def _key_problems(
    rows: list[tuple[int, dict[str, Any]]], columns: list[str], file: str, kind: str
) -> list[Problem]:
    # Done before pandera sees the table: in a DataFrame a missing key is
    # just NaN and an extra key a whole column, and both lose the row.
    problems: list[Problem] = []
    for number, obj in rows:
        problems += [
            Problem(file, number, c, "missing required field") for c in columns if c not in obj
        ]
        problems += [
            Problem(file, number, k, f"unexpected field (not in the {kind} schema)")
            for k in obj
            if k not in columns
        ]
    return problems


def _rows_by_value(column: pd.Series) -> dict[str, list[int]]:
    """Rows (index + 1) holding each string value of a column."""
    rows: dict[str, list[int]] = {}
    for index, value in column.items():
        if isinstance(value, str):
            rows.setdefault(value, []).append(int(index) + 1)
    return rows


def _schema_problems(
    error: pa.errors.SchemaErrors, frame: pd.DataFrame, file: str, skip: set[tuple[int, str]]
) -> list[Problem]:
    """Turn pandera's failure cases into Problems (row = index + 1). A check that fails on
    every row of a column (a Parquet column of numbers where text belongs) is one problem
    of the whole file, not a line per row."""
    found: dict[Problem, str] = {}  # each problem once, with the check that found it
    # Built once per column: a table full of duplicates must not go quadratic.
    rows_by_value: dict[str, dict[str, list[int]]] = {}
    failing: dict[tuple[str, str], dict[int, Any]] = {}  # (check, field) -> {row: value}
    for case in error.failure_cases.itertuples(index=False):
        check, field, value = str(case.check), case.column, case.failure_case
        row_field = schemas.ROW_CHECK_FIELDS.get(check)
        if row_field is not None and field != row_field:
            continue  # a row-wise check fails once per column; keep its own field
        row = 0 if pd.isna(case.index) else int(case.index) + 1
        field = LINE if field is None or pd.isna(field) else str(field)
        if (row, field) in skip:
            continue  # already reported as a missing field
        if row and check != schemas.DUPLICATE:
            failing.setdefault((check, field), {}).setdefault(row, value)
        if check == "not_nullable":
            message = "is null"
        elif check == schemas.DUPLICATE:
            if field not in rows_by_value:
                rows_by_value[field] = _rows_by_value(frame[field])
            holding = rows_by_value[field].get(value, [])
            # Only the first few other rows are listed: O(1) per duplicate.
            others = [str(r) for r in holding[:6] if r != row][:5]
            more = len(holding) - 1 - len(others)
            listed = ", ".join(others) + (f" and {more} more" if more > 0 else "")
            plural = "s" if len(holding) > 2 else ""
            message = f"duplicate value {show_value(value)} (also on row{plural} {listed})"
        elif check == schemas.EMPTY:
            message = check  # the value is whitespace: showing it adds nothing
        else:
            message = f"{check} (got {show_value(value)})"
        found.setdefault(Problem(file, row, field, message), check)
    whole = [key for key, rows in failing.items() if len(rows) == len(frame) > 1]  # in order
    problems = [p for p, check in found.items() if not (p.row and (check, p.field) in whole)]
    for check, field in whole:
        message = f"{'is null' if check == 'not_nullable' else check} in all {len(frame)} rows"
        if check not in ("not_nullable", schemas.EMPTY):  # as the rows' own messages show them
            values = [show_value(v) for v in list(failing[check, field].values())[:3]]
            message += f" (got {', '.join(values)}{', ...' if len(frame) > 3 else ''})"
        problems.append(Problem(file, 0, field, message))
    return problems


def load_table(
    path: str | os.PathLike[str],
    kind: str,
    max_tokens: int | None = None,
    count_tokens: Callable[[dict[str, Any]], int] | None = None,
    *,
    k_range: tuple[int, int] = (schemas.MIN_K, schemas.MAX_K),
) -> pd.DataFrame:
    """Read and validate a table of ``kind`` (see schemas.KINDS).

    Collects every problem (parse errors, missing/unexpected keys, schema
    failures, and with ``max_tokens``/``count_tokens`` sequences longer than
    the model's context) and raises one TableError listing them all.
    ``k_range`` bounds the number of responses of a comparison.
    """
    if (max_tokens is None) != (count_tokens is None):
        raise ValueError("max_tokens and count_tokens go together")
    schema = schemas.schema_for(kind, k_range=k_range)
    file = os.fspath(path)
    columns = list(schema.columns)
    rows, problems = _read_rows(path)
    key_problems = _key_problems(rows, columns, file, kind)
    problems += key_problems

    # Index = line number - 1, so pandera's index + 1 is the file's row even
    # when unparseable lines are left out. object dtype keeps JSON values as
    # they are (a str stays a str, a list a list) for the element-wise checks.
    frame = pd.DataFrame(
        [obj for _, obj in rows],
        index=[number - 1 for number, _ in rows],
        columns=columns,
        dtype=object,
    )
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as e:
        skip = {(p.row, p.field) for p in key_problems}
        problems += _schema_problems(e, frame, file, skip)

    if count_tokens is not None and max_tokens is not None:
        bad_rows = {p.row for p in problems}
        for number, obj in rows:
            if number in bad_rows:
                continue  # count_tokens may rely on fields that are broken
            n = count_tokens(obj)
            if n > max_tokens:
                message = f"sequence has {n} tokens > context {max_tokens}"
                problems.append(Problem(file, number, TOKEN_FIELD[kind], message))

    if problems:
        raise TableError(problems)
    # Rebuilt rather than frame.infer_objects(): pandas 3.1 leaves an
    # all-object frame of strings as object, while consumers expect what
    # pd.DataFrame(records) gives (str dtype, int64, lists as objects).
    return pd.DataFrame([obj for _, obj in rows], columns=columns)


def check_user_splits(tables: Mapping[str, pd.DataFrame]) -> None:
    """Prove that no user_id appears in two splits across ``tables``.

    ``tables`` maps a file name to its table as returned by ``load_table``
    (row = index + 1). A table whose file stem is a split name (``train.jsonl``)
    must also hold only that split. Raises TableError on field 'user_id' (or
    'split') naming both splits and where the user was first seen.
    """
    first_seen: dict[str, tuple[str, str, int]] = {}  # user -> split, file, row
    problems: list[Problem] = []
    for file, frame in tables.items():
        missing = {"user_id", "split"} - set(frame.columns)
        if missing:
            raise ValueError(f"{file}: not a prompt-like table, lacks {sorted(missing)}")
        stem = Path(file).stem
        for index, user, split in zip(frame.index, frame["user_id"], frame["split"], strict=True):
            row = int(index) + 1
            if stem in schemas.SPLITS and split != stem:
                problems.append(Problem(file, row, "split", f"split {split!r} in a {stem} file"))
            if user not in first_seen:
                first_seen[user] = (split, file, row)
                continue
            first_split, first_file, first_row = first_seen[user]
            if split != first_split:
                message = (
                    f"user {user!r} is in split {split!r} here but in split {first_split!r}"
                    f" at {first_file} row {first_row}"
                )
                problems.append(Problem(file, row, "user_id", message))
    if problems:
        raise TableError(problems)


def _to_json(value: Any) -> Any:
    # Rows often come from a DataFrame and carry numpy scalars and arrays.
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Write rows byte-stably (sorted keys, compact, UTF-8) and atomically.

    Byte-stable so that DVC's md5 changes only when the data does; atomic
    (temp file in the same directory, then os.replace) so a crash never
    leaves a half-written table that a later stage would read.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            for row in rows:
                line = json.dumps(
                    row,
                    ensure_ascii=False,
                    sort_keys=True,
                    separators=(",", ":"),
                    allow_nan=False,  # NaN is not JSON; other readers would choke
                    default=_to_json,
                )
                out.write(line.encode("utf-8") + b"\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; tables are meant to be shared
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
