"""JSON Lines files read and written: one JSON object a line.

Reading names every bad line as a Problem (its 1-based line number the row, so
``sed -n <n>p <file>`` shows it): bytes that are not UTF-8, malformed JSON, a
key twice, a blank line, a whole JSON array. Writing is byte-stable and atomic.
"""

from __future__ import annotations

import codecs
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from instructflow.tasks.table_errors import LINE, Problem, TableError


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSONL file of objects; raise TableError naming every bad line."""
    rows, problems = _read_rows(path)
    if problems:
        raise TableError(problems)
    return [obj for _, obj in rows]


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


def _malformed(error: json.JSONDecodeError, cut_off: bool) -> str:
    # json's messages that point at a position end in "at" ("Unterminated string starting
    # at"); a plain " at column" made them read "starting at at column 73".
    message = f"malformed JSON: {error.msg.removesuffix(' at')} at column {error.colno}"
    if cut_off:  # the file's last line, and no line break after it
        message += "; the file ends inside this line: cut off by a write or download that stopped?"
    return message


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


def _has_escaped_bytes(value: Any) -> bool:
    """Whether a value decoded with surrogateescape holds an undecodable byte."""
    if isinstance(value, str):
        return any("\udc80" <= c <= "\udcff" for c in value)
    if isinstance(value, list):
        return any(_has_escaped_bytes(v) for v in value)
    if isinstance(value, dict):
        return any(_has_escaped_bytes(k) or _has_escaped_bytes(v) for k, v in value.items())
    return False


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


def _to_json(value: Any) -> Any:
    # Rows often come from a DataFrame and carry numpy scalars and arrays.
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
