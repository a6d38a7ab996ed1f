"""TRL's dataset forms, read as the equivalent rows of a user's tables.

TRL, and the Hub datasets made for it, write SFT rows as prompt/completion
and preference rows with an explicit prompt; their conversational variants
hold message lists. `load_dataset` reads a row in one of these forms as the
row it is equivalent to in the forms instructflow.tasks.dataset_schemas
validates:

- demonstrations `{"prompt": str, "completion": str}` -> `{"prompt", "response"}`;
- demonstrations `{"prompt": [messages], "completion": [messages]}`
  -> `{"messages": prompt + completion}`;
- prompts `{"prompt": [messages]}` (conversational prompt-only) -> `{"messages"}`,
  a conversation ending on the user's turn, rendered as the prompt of a
  conversation in demonstrations or preferences is;
- preferences `{"prompt": [messages], "chosen": [messages], "rejected": [messages]}`
  -> `{"chosen": prompt + chosen, "rejected": prompt + rejected}` (the
  conversation shape, whose prompt is the turns both share);
- preferences `{"prompt": str, "chosen": [messages], "rejected": [messages]}`
  (HuggingFaceH4/ultrafeedback_binarized's form) -> `{"chosen", "rejected"}`
  as they are when they hold a user turn: as TRL's `maybe_extract_prompt`
  does, the turns both share are the prompt and the text `prompt` (a copy
  of the first user turn there) is not read; when they hold none, they are
  answers to the text `prompt`, which becomes the user's turn before them.

A prompts table whose every `prompt` is HH-RLHF text up to the assistant's turn
is read as those conversations (`messages`); a demonstrations table whose every
row is such a prompt and a text `response` (or `completion`), as the
conversation prompt + answer.
A preferences table whose every row is a text pair in HH-RLHF text is read as
the HH conversations it holds: a `prompt` up to the assistant's turn beside
the answers (Dahoas/full-hh-rlhf's and rm-static's form, which trlX's examples
read) as prompt + answer; whole conversations as `chosen` and `rejected` as
they are (the `prompt` repeats their turns). Read as text, HH markup went into
the pipeline's own Q/A frame past the chat template, or whole conversations
became the responses. A table that mixes it with plain text
prompts stays text pairs (as it was read before this form was).

A row in none of these forms is left as it is, so its problems name the
fields it has; a demonstration with a `completion` that fits neither of its
forms gets `completion_problem`'s message, since the schema would ask for the
`response` the user never wrote (one with no answer at all, among rows that
answer in `completion`, gets `missing_completion`'s; a preference with a
message-list `prompt` beside text answers, `text_answers_problem`'s); in a
preferences table whose other rows are in the conversational form, such a row
gets `mixed_preference_problems`' messages, since its `prompt` would make the
whole table read as text pairs. Where every row has the same such problem, it
is said once for the file (`_whole_table`).
Other columns (user_id, split, ...) are kept.
"""

from dataclasses import replace
from pathlib import Path
from typing import Any

from instructflow.tasks.conversations import (
    BAD_CONTENT,
    BAD_ROLE,
    CONTROL_IN_MESSAGE,
    EMPTY_EARLIER_ANSWER,
    EMPTY_EARLIER_QUESTION,
    EMPTY_QUESTION,
    SURROGATE_IN_MESSAGE,
    message_at_fault,
    parse_hh,
)
from instructflow.tasks.tables import Problem, show_value


def _messages(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) for m in value)


def as_own_form(table: str, row: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """`row` in the form its table's schema reads, and whether it was in a TRL form."""
    prompt = row.get("prompt")
    if table == "demonstrations" and "completion" in row and "response" not in row:
        rest = {k: v for k, v in row.items() if k not in ("prompt", "completion")}
        completion = row["completion"]
        if isinstance(prompt, str) and isinstance(completion, str):
            return rest | {"prompt": prompt, "response": completion}, True
        if _messages(prompt) and _messages(completion):
            return rest | {"messages": prompt + completion}, True
    if table == "prompts" and isinstance(prompt, list) and "messages" not in row:
        # Any list: the prompt-conversation checks name what is wrong in it.
        rest = {k: v for k, v in row.items() if k != "prompt"}
        return rest | {"messages": prompt}, True
    if table == "preferences" and (_messages(prompt) or isinstance(prompt, str)):
        chosen, rejected = row.get("chosen"), row.get("rejected")
        if _messages(chosen) and _messages(rejected):
            rest = {k: v for k, v in row.items() if k != "prompt"}
            if isinstance(prompt, str):
                if _has_user_turn(chosen) or _has_user_turn(rejected):
                    return rest | {"chosen": chosen, "rejected": rejected}, True
                prompt = [{"role": "user", "content": prompt}]
            return rest | {"chosen": prompt + chosen, "rejected": prompt + rejected}, True
    return row, False


def _has_user_turn(messages: list[dict]) -> bool:
    return any(m.get("role") == "user" for m in messages)


COMPLETION_TYPES = (
    "a string, or in TRL's conversational form a list of {role, content} messages "
    "(the prompt then a list of messages too)"
)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        if value and all(isinstance(v, str) for v in value):
            return "a list of strings"
        return "a list of messages" if _messages(value) else "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "an object" if isinstance(value, dict) else f"a {type(value).__name__}"


def completion_problem(table: str, row: dict[str, Any]) -> tuple[str, str] | None:
    """(field, message) for a demonstration in TRL's prompt/completion form whose values fit
    neither of its variants, naming the row's own fields; None for any other row."""
    if table != "demonstrations" or "completion" not in row or "response" in row:
        return None
    if as_own_form(table, row)[1]:
        return None
    prompt, completion = row.get("prompt"), row["completion"]
    if _messages(prompt):
        return "completion", (
            f"must be a list of {{role, content}} messages, as 'prompt' is; got {_kind(completion)}"
        )
    if isinstance(prompt, str) and _messages(completion):
        return "completion", (
            "is a list of messages while 'prompt' is text: in TRL's conversational form "
            "'prompt' is a list of {role, content} messages too, ending on the user's turn"
        )
    if isinstance(prompt, str):
        return "completion", f"must be {COMPLETION_TYPES}; got {_kind(completion)}"
    if "prompt" not in row:
        return "prompt", "missing field (a 'completion' answers a 'prompt')"
    return "prompt", f"must be {COMPLETION_TYPES}; got {_kind(prompt)}"


def text_answers_problem(table: str, row: dict[str, Any]) -> tuple[str, str] | None:
    """(field, message) for a preference whose `prompt` is a message list beside text
    answers, half of TRL's conversational form; None for any other row. The text-pair
    schema would say only that the prompt 'must be a string'."""
    if table != "preferences" or not (_messages(row.get("prompt")) and row.get("prompt")):
        return None
    if not all(isinstance(row.get(k), str) for k in ("chosen", "rejected")):
        return None
    return "prompt", (
        "is a list of messages while 'chosen' and 'rejected' are text: in TRL's "
        "conversational form they are lists of {role, content} messages too (each answer "
        "one assistant turn); else write the prompt as text"
    )


IMPLICIT_PROMPT_TEXT = (
    "is text with no 'prompt' beside it, and not an HH-RLHF conversation ('\\n\\nHuman: ...'): "
    "put the prompt in a 'prompt' column and the answers alone in 'chosen' and 'rejected' "
    "(TRL's implicit-prompt text form, the prompt inside both answers, is not read), or "
    "write them as lists of {role, content} messages"
)


def implicit_prompt_problem(table: str, row: dict[str, Any]) -> tuple[str, str] | None:
    """(field, message) for a text pair without a `prompt` whose sides are not HH text (TRL's
    standard implicit-prompt form); None for any other row. The conversation schema said
    only that each side 'must be a list of {role, content} messages or HH-RLHF text'."""
    if table != "preferences" or "prompt" in row:
        return None
    sides = [row.get(k) for k in ("chosen", "rejected")]
    if not all(isinstance(v, str) and v.strip() for v in sides):
        return None  # an empty or non-text side is the schema's to name
    return None if all(parse_hh(v) for v in sides) else ("chosen", IMPLICIT_PROMPT_TEXT)


def missing_completion(table: str, row: dict[str, Any], completions: int) -> list[tuple[str, str]]:
    """(field, message) pairs for a demonstration with no answer at all in a table whose
    other rows answer in TRL's `completion` (`completions` of them); none for any other row.
    The schema would ask for the `response` (or `messages`) the user never wrote, and check
    a conversational `prompt` as text."""
    answers = ("completion", "response", "messages")
    if table != "demonstrations" or not completions or any(k in row for k in answers):
        return []
    missing = f"missing field (the table's other {completions} rows answer their 'prompt' in it)"
    no_prompt = [] if "prompt" in row else [("prompt", "missing field")]
    return [*no_prompt, ("completion", missing)]


def mixed_preference_problems(
    rows: list[tuple[int, dict[str, Any], bool]],
) -> dict[int, list[tuple[str, str]]]:
    """(field, message) pairs per row number for a preferences table that mixes TRL's
    conversational form with rows that keep a `prompt` (rows: number, row as the user wrote
    it, whether it was in a TRL form).

    The table's shape is read from the columns of all its rows, so one row whose `prompt`
    survives (a message list holding a string, a text `chosen`, a missing `rejected`) turns
    every converted row into a text pair missing its prompt: in a trial one such row gave
    720 problems, none of them on what was wrong. Here the form fewer rows are in is the
    odd one out: each of its rows gets its own problem, in the fields the user wrote, and
    the rest of the table is checked in its own form.
    """
    converted = [(n, row) for n, row, was_trl in rows if was_trl]
    text = [(n, row) for n, row, was_trl in rows if not was_trl and "prompt" in row]
    if not converted or not text:
        return {}
    if len(converted) >= len(text):
        return {n: _not_conversational(row, len(converted)) for n, row in text}
    message = (
        f"is a list of messages while the table's other {len(text)} rows give 'prompt', "
        "'chosen' and 'rejected' as text: write the table in one form"
    )
    return {n: [("chosen", message)] for n, _ in converted}


def _not_conversational(row: dict[str, Any], others: int) -> list[tuple[str, str]]:
    """What keeps a preference row out of TRL's conversational form, field by field."""
    wanted = f"must be a list of {{role, content}} messages, as in the table's other {others} rows"
    problems = []
    for name in ("prompt", "chosen", "rejected"):
        if name not in row:
            problems.append((name, "missing field"))
            continue
        value = row[name]
        if name == "prompt" and isinstance(value, str):
            continue  # a text prompt is one of TRL's forms when the answers are message lists
        if isinstance(value, list) and not _messages(value):
            n, item = next((i, v) for i, v in enumerate(value, 1) if not isinstance(v, dict))
            # show_value: a long item is cut, and the "..." says so (a bare cut read as whole)
            problems.append((name, f"{wanted}; item {n} is {_kind(item)}: {show_value(item)}"))
        elif not _messages(value):
            problems.append((name, f"{wanted}; got {_kind(value)}"))
    return problems


def _hh_prompt_turns(value: Any) -> list[dict[str, str]] | None:
    """The turns of HH-RLHF text up to the assistant's empty turn (left out), else None."""
    turns = parse_hh(value) if isinstance(value, str) else None
    if turns and len(turns) > 1 and turns[-1] == {"role": "assistant", "content": ""}:
        return turns[:-1]
    return None


def _hh_form(table: str, row: Any) -> dict[str, Any] | None:
    """A row of `table` given in HH-RLHF text as the conversation it holds, else None."""
    if table == "preferences":
        return _hh_pair(row)
    if not isinstance(row, dict) or (turns := _hh_prompt_turns(row.get("prompt"))) is None:
        return None
    rest = {k: v for k, v in row.items() if k not in ("prompt", "response", "completion")}
    if table == "prompts":
        return rest | {"messages": turns}
    answer = row.get("response", row.get("completion"))
    if not isinstance(answer, str):
        return None
    return rest | {"messages": [*turns, {"role": "assistant", "content": answer.strip()}]}


def _hh_pair(row: Any) -> dict[str, Any] | None:
    """A text pair given in HH-RLHF text as the HH conversations it holds, else None: whole
    conversations as chosen and rejected (the prompt repeats their turns and is not read,
    as for message lists), or a prompt up to the assistant's empty turn and the answers."""
    if not isinstance(row, dict) or not all(
        isinstance(row.get(k), str) for k in ("prompt", "chosen", "rejected")
    ):
        return None
    rest = {k: v for k, v in row.items() if k != "prompt"}
    if parse_hh(row["chosen"]) and parse_hh(row["rejected"]):
        return rest
    if _hh_prompt_turns(row["prompt"]) is not None:
        prompt = row["prompt"].rstrip()
        return rest | {k: f"{prompt} {row[k].strip()}" for k in ("chosen", "rejected")}
    return None


HH_TABLES = ("prompts", "demonstrations", "preferences")


def own_forms(
    path: Path, table: str, rows: list[tuple[int, Any]]
) -> tuple[list[tuple[int, Any]], int, list[Problem]]:
    """The rows with those in a TRL form rewritten to their equivalent; how many were; and
    the problems of rows that look like a TRL form but fit none, left out of the rest."""
    hh = [_hh_form(table, obj) for _, obj in rows] if table in HH_TABLES else []
    if hh and all(row is not None for row in hh):
        return [(n, row) for (n, _), row in zip(rows, hh, strict=True)], len(rows), []
    out, converted, problems, forms = [], 0, [], []
    completions = sum(isinstance(obj, dict) and "completion" in obj for _, obj in rows)
    for n, obj in rows:
        if isinstance(obj, dict):
            own, was_trl = as_own_form(table, obj)
            forms.append((n, obj, was_trl))
            converted += was_trl
            bad = (
                completion_problem(table, obj)
                or text_answers_problem(table, obj)
                or implicit_prompt_problem(table, obj)
            )
            if not was_trl and bad is not None:
                problems.append(Problem(str(path), n, *bad))
                continue
            if missing := missing_completion(table, obj, completions):
                problems += [Problem(str(path), n, *p) for p in missing]
                continue
            obj = own
        out.append((n, obj))
    if table == "preferences" and (mixed := mixed_preference_problems(forms)):
        # among conversational rows, what a row lacks of that form is its problem
        problems = [p for p in problems if p.row not in mixed]
        problems += [Problem(str(path), n, *p) for n, found in mixed.items() for p in found]
        out = [(n, obj) for n, obj in out if n not in mixed]
    return out, converted, _whole_table(problems, len(rows))


def _whole_table(problems: list[Problem], rows: int) -> list[Problem]:
    """One problem for the whole file (row 0) where every row has the same one: a table
    written in one wrong form is one mistake, not a screen of identical lines (as the
    schema's checks say of a column that fails in every row)."""
    said = {(p.field, p.message) for p in problems}
    if rows < 2 or len(problems) != rows or len(said) != 1:
        return problems
    (field, message), first = said.pop(), problems[0]
    return [replace(first, row=0, field=field, message=f"{message}, in all {rows} rows")]


ANSWER_FIELDS = ("chosen", "rejected", "completion")


def as_written(problems: list[Problem], table: str, written: dict[int, Any]) -> list[Problem]:
    """Schema problems of rows read from a TRL form, naming the fields the user wrote
    (`written`: row number -> the row as written): an empty `completion` was checked as the
    `response` it became, a conversational `prompt` (+ `completion`) as `messages`."""

    def field(problem: Problem, row: dict) -> str:
        if table == "demonstrations":
            return {"response": "completion", "messages": "prompt + completion"}.get(
                problem.field, problem.field
            )
        if table == "preferences" and problem.field in ("chosen", "rejected"):
            return "prompt" if _in_prompt(problem.message, row.get("prompt")) else problem.field
        return "prompt" if table == "prompts" and problem.field == "messages" else problem.field

    def message(problem: Problem, row: dict, named: str) -> str:
        # An answer's value as written: the row checked held the prompt's turns and the
        # answer in one conversation, which the user never wrote.
        check, got, _ = problem.message.partition(" (got ")
        if not got or named not in ANSWER_FIELDS or named not in row:
            return problem.message
        return f"{check} (got {show_value(row[named])})"

    def as_user_wrote(problem: Problem) -> Problem:
        row = written.get(problem.row)
        if not isinstance(row, dict) or not as_own_form(table, row)[1]:
            return problem  # a row in the table's own form: named as it is
        named = field(problem, row)
        return replace(problem, field=named, message=message(problem, row, named))

    # A bad turn of a conversational `prompt` is in both conversations it became: name it once.
    return list(dict.fromkeys(as_user_wrote(p) for p in problems))


def _in_prompt(message: str, prompt: Any) -> bool:
    """Whether a preference conversation's problem `message` is about a turn of its TRL
    `prompt` (a message list), which the user fixes there, not in `chosen` or `rejected`."""
    kinds = (
        BAD_ROLE,
        BAD_CONTENT,
        EMPTY_QUESTION,
        EMPTY_EARLIER_QUESTION,
        EMPTY_EARLIER_ANSWER,
        CONTROL_IN_MESSAGE,
        SURROGATE_IN_MESSAGE,
    )
    kind = next((k for k in kinds if message.startswith(k)), None)
    return kind is not None and _messages(prompt) and message_at_fault(kind, prompt) is not prompt
