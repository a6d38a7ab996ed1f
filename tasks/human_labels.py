"""A filled labeling file read back: people's rankings and Likert scores, checked.

The file is checked (every item ranked, each ranking a permutation of that
item's labels, Likert 1-7, no item or response twice, the texts those of this
run's export), each problem named at the row to fix, all at once; a CSV is read
as a spreadsheet saves it, a JSONL file one item a line. What the rankings add
up to is instructflow.tasks.human_eval's (`human_results`).
"""

import csv
import io
import json
from pathlib import Path

from instructflow.tasks.human_eval import LIKERT, text_digest
from instructflow.tasks.spreadsheet_cells import as_exported
from instructflow.tasks.tables import Problem, TableError, show_value


def read_labels(
    path: Path, key: dict[str, dict[str, str]], exported: dict | None = None
) -> dict[str, dict]:
    """{item_id: {"ranking": [labels best first], "likert": {label: 1..7}}} from a filled file.

    Every problem (unknown item or label, missing item or label, a repeated
    row or item, a ranking that is not a permutation of the item's labels, a
    Likert score outside 1-7) is reported at once, naming file, row and field.
    """
    problems: list[Problem] = []
    texts: list[tuple[int, str, str, str, str]] = []  # what the file says was exported
    # A path mistyped or a file of another kind is one problem, not a traceback or a
    # malformed-JSON problem per line.
    if not path.is_file():
        raise TableError([Problem(str(path), 0, "<file>", "file not found")])
    if path.suffix.lower() not in (".csv", ".jsonl"):
        why = "expected a .csv or .jsonl file, as `eval export` writes them"
        raise TableError([Problem(str(path), 0, "<file>", why)])
    read = _csv_labels if path.suffix.lower() == ".csv" else _jsonl_labels
    labels = read(path, key, problems, texts)
    other = _other_texts(path, texts, exported or {})
    if other is not None:  # then every other problem follows from it: say only this
        raise TableError([other])
    missing = sorted(set(key) - set(labels))
    if missing:
        problems.append(
            Problem(
                str(path), 0, "item_id", f"{len(missing)} items not labelled, e.g. {missing[0]}"
            )
        )
    if problems:
        raise TableError(problems)
    return labels


def _other_texts(path: Path, responses: list[tuple[int, str, str, str, str]], exported: dict):
    """The one problem of a file filled from another export or run, or None: `responses` are
    (row, item, label, prompt, text) as the file has them."""
    differ = [
        (row, item, label)
        for row, item, label, prompt, text in responses
        if item in exported and exported[item].get(label) != text_digest(prompt, text)
    ]
    if not differ:
        return None
    row, item, label = differ[0]
    return Problem(
        str(path),
        row,
        "response",
        f"{len(differ)} of {len(responses)} responses are not the texts this run's export "
        f"wrote (first: {item} {label}): the file was filled from another export (each "
        "`eval export` writes new ones) or another run; label the files of the latest export",
    )


def _csv_labels(path: Path, key: dict, problems: list[Problem], texts: list) -> dict[str, dict]:
    """Labels of a CSV, one response a row. Rows count as a spreadsheet counts them (the
    header is row 1; a response spanning lines is one row), and each problem is named at
    the row to fix: the one with the unknown label, the repeated rank or the repeat of a
    response, which names the row it repeats."""
    name = str(path)
    item_rows: dict[str, list[int]] = {}
    rows: dict[str, dict[str, tuple[int, dict]]] = {}  # item -> label -> (row, values)
    for row_no, row in enumerate(_csv_reader(path), start=2):
        item, label = row.get("item_id", ""), row.get("label")
        prompt, text = (as_exported(row.get(k) or "") for k in ("prompt", "response"))
        texts.append((row_no, item, label, prompt, text))
        if item not in key:
            problems.append(Problem(name, row_no, "item_id", f"unknown item {show_value(item)}"))
            continue
        item_rows.setdefault(item, []).append(row_no)
        by_label = rows.setdefault(item, {})
        if label not in key[item]:
            problems.append(Problem(name, row_no, "label", _no_label(item, label, key)))
        elif label in by_label:
            first_no, first = by_label[label]
            # A conflicting repeat must not replace the first: which one is meant is unknown.
            repeat = _repeat(f"{item} {label}", first_no, first == row)
            problems.append(Problem(name, row_no, "label", repeat))
        else:
            by_label[label] = (row_no, row)
    labels = {}
    for item, by_label in rows.items():
        n = len(key[item])
        once = f"its {n} responses take ranks 1-{n} once each"
        taken: dict[int, tuple[int, str]] = {}  # rank -> (row, label)
        likerts = {}
        for label, (row_no, row) in by_label.items():
            rank = _int(row.get("rank"), name, row_no, "rank", problems)
            if rank is not None and not 1 <= rank <= n:
                problems.append(Problem(name, row_no, "rank", f"{item}: rank {rank}: {once}"))
            elif rank in taken:
                problems.append(
                    Problem(
                        name,
                        row_no,
                        "rank",
                        f"{item}: rank {rank} is row {taken[rank][0]}'s too; {once}",
                    )
                )
            elif rank is not None:
                taken[rank] = (row_no, label)
            likert = _int(row.get("likert"), name, row_no, "likert", problems)
            if likert is not None and likert not in LIKERT:
                problems.append(Problem(name, row_no, "likert", f"{likert} is not in 1-7"))
            elif likert is not None:
                likerts[label] = likert
        for label in key[item]:
            if label not in by_label:
                problems.append(
                    Problem(  # no row of its own to name: the item's are in the message
                        name,
                        0,
                        "label",
                        f"{item} has no row for label {label!r} "
                        f"(its rows: {', '.join(map(str, item_rows[item]))})",
                    )
                )
        labels[item] = {"ranking": [taken[r][1] for r in sorted(taken)], "likert": likerts}
    return labels


def _csv_reader(path: Path) -> csv.DictReader:
    """The rows of a filled CSV as a spreadsheet saves it. Excel's "CSV UTF-8" starts with a
    byte-order mark (read as part of the first column's name, it hid `item_id`), and where
    the decimal mark is a comma it separates cells with ';'. A header that lacks a column
    the import needs is one problem naming the file, not one per row."""
    text = _text(path)
    header = text.partition("\n")[0]
    delimiter = ";" if header.count(";") > header.count(",") else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    columns = reader.fieldnames or []
    for needed in ("item_id", "label", "rank"):
        if needed not in columns:
            has = f"the header has: {', '.join(columns)}" if columns else "the file is empty"
            raise TableError([Problem(str(path), 1, needed, f"no such column ({has})")])
    return reader


def _no_label(item: str, label: str, key: dict) -> str:
    return f"{item} has no label {show_value(label)} (its labels: {', '.join(key[item])})"


def _jsonl_labels(path: Path, key: dict, problems: list[Problem], texts: list) -> dict[str, dict]:
    """Labels of a JSONL file, one item a line (its row)."""
    name = str(path)
    labels: dict[str, dict] = {}
    first: dict[str, tuple[int, dict]] = {}  # item -> (row, object) where it first is
    for row_no, row in _json_rows(path, problems):
        item = row.get("item_id", "")
        texts += [
            (row_no, item, r.get("label"), row.get("prompt", ""), r.get("text", ""))
            for r in row.get("responses", [])
            if isinstance(r, dict)
        ]
        if item not in key:
            problems.append(Problem(name, row_no, "item_id", f"unknown item {show_value(item)}"))
            continue
        if item in first:
            first_no, earlier = first[item]
            repeat = _repeat(item, first_no, earlier == row)
            problems.append(Problem(name, row_no, "item_id", repeat))
            continue
        first[item] = (row_no, row)
        # a value of the wrong type is this row's problem (its item is not "not labelled")
        if not isinstance(row.get("likert", {}), dict):
            problems.append(Problem(name, row_no, "likert", "expected {label: 1-7}"))
            row = row | {"likert": {}}
        if not isinstance(row.get("ranking", []), list):
            problems.append(Problem(name, row_no, "ranking", "expected a list of labels"))
            row = row | {"ranking": sorted(key[item])}
        likert = {
            label: _int(v, name, row_no, "likert", problems)
            for label, v in row.get("likert", {}).items()
        }
        for label, value in likert.items():
            if label not in key[item]:  # a score for no response of this item: say so
                problems.append(Problem(name, row_no, "likert", _no_label(item, label, key)))
            elif value is not None and value not in LIKERT:
                problems.append(Problem(name, row_no, "likert", f"{label}: {value} is not in 1-7"))
        ranking = list(row.get("ranking", []))
        if sorted(map(str, ranking)) != sorted(key[item]):
            order = f"{_shown_ranking(ranking)} is not an order of {sorted(key[item])}"
            problems.append(Problem(name, row_no, "ranking", f"{item}: {order}"))
        labels[item] = {"ranking": ranking, "likert": likert}
    return labels


def _json_rows(path: Path, problems: list[Problem]):
    """(row, object) of a JSONL file; a line that is not a JSON object is a problem."""
    # Lines end at \n only: str.splitlines also splits at U+2028 or U+0085 inside a string
    # that an editor saved raw (the export escapes them).
    for row_no, line in enumerate(_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append(Problem(str(path), row_no, "<line>", f"malformed JSON: {error.msg}"))
            continue
        if not isinstance(row, dict):
            problems.append(Problem(str(path), row_no, "<line>", "expected a JSON object"))
        else:
            yield row_no, row


def _shown_ranking(ranking: list) -> str:
    """A ranking as written; a long one (a column pasted whole, say) cut as show_value cuts
    the other refusals' values (a list's repr ends in "]" unless show_value cut it)."""
    cut = show_value(ranking)
    return cut if cut.endswith("...") else repr(ranking)


def _int(value, file: str, row: int, field: str, problems: list[Problem]) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        got = show_value(value)  # an oversized cell cut, as the other refusals cut theirs
        problems.append(Problem(file, row, field, f"expected a whole number, got {got}"))
        return None


def _repeat(what: str, first_row: int, same: bool) -> str:
    """The problem of a row that repeats row `first_row` (`same`: with the same values)."""
    return f"{what} is also row {first_row}" + (
        "" if same else ", with other values: keep one of them"
    )


def _text(path: Path) -> str:
    """A filled file's text; a byte-order mark (Excel's "CSV UTF-8", Windows editors) is not
    part of its first row, and a file not in UTF-8 is one problem, not a traceback."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        why = f"not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})"
        raise TableError([Problem(str(path), 0, "<file>", f"{why}: save it as UTF-8")]) from e
