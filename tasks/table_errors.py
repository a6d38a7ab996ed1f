"""What a refused table says: each thing wrong with it a Problem, naming file, row and field,
all of them raised at once as one TableError (instructflow.tasks.tables, .json_lines)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

LINE = "<line>"  # field of problems that concern a whole line, not one value
MAX_LISTED = 20  # problems listed in a TableError's message


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


def refused(why: object) -> str:
    """What a run refused before training says, whichever check refused it (a table of the
    embedded world, a user's dataset, the base model, the DVC gate): one wording for all.
    Here, not in tasks/preflight.py (which imports MLflow and Prefect), so the command line
    can say it before those imports."""
    return f"refused before training: {why}"
