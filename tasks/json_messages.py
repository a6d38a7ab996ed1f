"""Conversations saved as JSON text in a text field, refused before training.

A table whose message lists went through json.dumps before it was written (a CSV round
trip, a Parquet string column) holds `[{"role": "user", "content": ...}]` as text. Read
as text, the JSON itself became the prompt or the answer the models train on: a trial's
Parquet preferences and prompts, every cell such a string, passed the data check (only a
demonstrations `messages` column of them was refused, and not said why).
"""

import json
from pathlib import Path
from typing import Any

from instructflow.tasks.tables import Problem

TEXT_FIELDS = ("prompt", "chosen", "rejected", "response", "completion", "messages")
AS_JSON_TEXT = (
    "holds a conversation as JSON text (a list of {role, content} messages written as a"
    " string, json.dumps): write the list itself, or json.loads the column first"
)


def _is_json_conversation(value: Any) -> bool:
    if not isinstance(value, str) or not value.lstrip().startswith(("[", "{")):
        return False  # the cheap test first: almost every text is no JSON at all
    try:
        parsed = json.loads(value)
    except ValueError:
        return False
    messages = parsed if isinstance(parsed, list) else [parsed]
    return bool(messages) and all(
        isinstance(m, dict) and "role" in m and "content" in m for m in messages
    )


def json_text_problems(path: Path, rows: list[tuple[int, Any]]) -> list[Problem]:
    """A problem per row and field holding a conversation as JSON text; one on row 0 for a
    field where every row does (a whole column written so is one mistake, not 120)."""
    problems = []
    for field in TEXT_FIELDS:
        hits = [
            n for n, obj in rows if isinstance(obj, dict) and _is_json_conversation(obj.get(field))
        ]
        if hits and len(hits) == len(rows):
            problems.append(Problem(str(path), 0, field, f"{AS_JSON_TEXT} (all {len(rows)} rows)"))
        else:
            problems += [Problem(str(path), n, field, AS_JSON_TEXT) for n in hits]
    return problems
