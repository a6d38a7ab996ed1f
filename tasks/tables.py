"""Reading, validating and writing the pipeline's JSONL tables.

Every stage reads its inputs through ``load_table``: a bad table stops the run
before any training with a ``TableError`` that lists each problem as
``<file> row <n> field '<field>': <message>``, where the row is the 1-based
line number in the JSONL file, so ``sed -n <n>p <file>`` shows the culprit.

Here: a table's schema (pandera, instructflow.tasks.schemas), its fields and its
users' splits checked. The lines themselves are read and written by
instructflow.tasks.json_lines; Problem and TableError are instructflow.tasks.table_errors'.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pandera.pandas as pa

from instructflow.tasks import schemas

# Stages and tests import these from here: a table's reading, writing and refusals as one.
from instructflow.tasks.json_lines import JSON_ARRAY, _read_rows, read_jsonl, write_jsonl  # noqa: F401
from instructflow.tasks.table_errors import LINE, Problem, TableError, show_value

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


def _rows_by_value(column: pd.Series) -> dict[str, list[int]]:
    """Rows (index + 1) holding each string value of a column."""
    rows: dict[str, list[int]] = {}
    for index, value in column.items():
        if isinstance(value, str):
            rows.setdefault(value, []).append(int(index) + 1)
    return rows


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
