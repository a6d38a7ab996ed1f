"""Conversations in a user's dataset: message lists, HH-RLHF text, and how they become prompt + response.

A conversation is a list of ``{"role", "content"}`` messages (roles system,
user, assistant), or Anthropic HH-RLHF's text form
``"\\n\\nHuman: ...\\n\\nAssistant: ..."``, which is parsed into the same list.
A message may carry other keys (Hub exports have ``name``, ``tool_calls``;
Parquet gives every message each key any message has, null where it had
none): `drop_message_extras` keeps role and content and counts the others.
The pipeline trains on (prompt, response) pairs: the response is the final
assistant turn and the prompt is every turn before it, rendered with the
base model's chat template when its tokenizer has one, as plain text otherwise.
A template may refuse a conversation (Gemma's and Mistral's refuse a system
turn, Llama 2's turns that do not alternate): `PromptRenderer` turns that
into a problem naming the row, before any training.
People (`instructflow eval export`'s labelers) read a conversation's prompt
as `readable` turns, never as the template's markup: the model's input is
the rendered text, what people read is the conversation.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instructflow.tasks.schemas import _CONTROL_RE, _SURROGATE_RE, CONTROL_CHARS, SURROGATE
from instructflow.tasks.tables import Problem

ROLES = ("system", "user", "assistant")
HH_MARKER = re.compile(r"\n\n(Human|Assistant): ?")
HH_ROLE = {"Human": "user", "Assistant": "assistant"}
PLAIN_ROLE = {"system": "System", "user": "Human", "assistant": "Assistant"}
# Beside a user's dataset's eval/test.jsonl (whose prompts are the rendered text): each
# conversation's prompt as people read it, {prompt_id, readable_prompt}, one row per test
# prompt that came from a conversation. A separate table: the prompts schema is strict.
READABLE_PROMPTS = "eval/test_readable.jsonl"


def parse_hh(text: str) -> list[dict[str, str]] | None:
    """HH-RLHF text -> messages; None when the text is not in that form.

    The text must start with a ``\\n\\nHuman:`` turn; a turn's content runs
    to the next marker. Whitespace around a turn's content is not part of it.
    """
    parts = HH_MARKER.split(text)
    # re.split with one group: [before, role, content, role, content, ...]
    if len(parts) < 3 or parts[0].strip():
        return None
    roles, contents = parts[1::2], parts[2::2]
    return [
        {"role": HH_ROLE[role], "content": content.strip()}
        for role, content in zip(roles, contents, strict=True)
    ]


def as_messages(value: Any) -> list[dict[str, Any]] | None:
    """A conversation cell (message list or HH text) as messages; None if it is neither."""
    if isinstance(value, str):
        return parse_hh(value)
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        return value
    return None


NOT_A_CONVERSATION = (
    "must be a list of {role, content} messages or HH-RLHF text ('\\n\\nHuman: ...')"
)
EMPTY_CONVERSATION = "is an empty conversation"
# Two problems, not one "without a role ... or without string content": a refusal says
# which rule the message it shows breaks (a typed 'assitant' read as either).
BAD_ROLE = f"has a message whose role is not {', '.join(map(repr, ROLES[:-1]))} or {ROLES[-1]!r}"
BAD_CONTENT = "has a message whose content is not a string"
NOT_ASSISTANT_LAST = "does not end on an assistant turn"
EMPTY_ANSWER = "its final assistant turn is empty"
NO_USER_TURN = "has no user turn before its final assistant turn"
EMPTY_QUESTION = "its last user turn (the one answered) is empty"
EMPTY_EARLIER_QUESTION = "an earlier user turn is empty"
EMPTY_EARLIER_ANSWER = "an earlier assistant turn is empty"
CONTROL_IN_MESSAGE = f"has a message that {CONTROL_CHARS}"
SURROGATE_IN_MESSAGE = f"has a message that {SURROGATE}"
TEMPLATE_REFUSES = "the base model's chat template refuses this conversation"
CONVERSATION_PROBLEMS = (
    NOT_A_CONVERSATION,
    EMPTY_CONVERSATION,
    BAD_ROLE,
    BAD_CONTENT,
    NOT_ASSISTANT_LAST,
    EMPTY_ANSWER,
    NO_USER_TURN,
    EMPTY_QUESTION,
    EMPTY_EARLIER_QUESTION,
    EMPTY_EARLIER_ANSWER,
    CONTROL_IN_MESSAGE,
    SURROGATE_IN_MESSAGE,
)


def _blank_user_turn(message: dict) -> bool:
    return message["role"] == "user" and not message["content"].strip()


def _blank_assistant_turn(message: dict) -> bool:
    return message["role"] == "assistant" and not message["content"].strip()


# Other keys are let through: drop_message_extras removes them before any use.
def _bad_role(message: dict) -> bool:
    return message.get("role") not in ROLES


def _bad_content(message: dict) -> bool:
    return not isinstance(message.get("content"), str)


def _without_extras(value: Any, ignored: Counter[str]) -> Any:
    """A message list cut to role and content, counting in `ignored` the other keys that
    hold a value; anything else (text, a message without role or content) as it is, so
    its problem shows what it holds."""
    if not (
        isinstance(value, list)
        and value
        and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)
    ):
        return value
    for message in value:
        ignored.update(
            k for k, v in message.items() if k not in ("role", "content") and v is not None
        )
    return [{"role": m["role"], "content": m["content"]} for m in value]


def drop_message_extras(
    rows: list[tuple[int, Any]],
) -> tuple[list[tuple[int, Any]], dict[str, int]]:
    """The rows with every message list cut to role and content; how many messages held
    a value under each key dropped (null ones are not counted: Parquet adds those)."""
    ignored: Counter[str] = Counter()
    out = [
        (
            n,
            {k: _without_extras(v, ignored) for k, v in obj.items()}
            if isinstance(obj, dict)
            else obj,
        )
        for n, obj in rows
    ]
    return out, dict(sorted(ignored.items()))


def conversation_problem(value: Any) -> str | None:
    """The first of CONVERSATION_PROBLEMS a conversation cell has, or None."""
    messages = as_messages(value)
    if messages is None:
        return NOT_A_CONVERSATION
    if not messages:
        return EMPTY_CONVERSATION
    if any(_bad_role(m) for m in messages):
        return BAD_ROLE
    if any(_bad_content(m) for m in messages):
        return BAD_CONTENT
    if messages[-1]["role"] != "assistant":
        return NOT_ASSISTANT_LAST
    if not messages[-1]["content"].strip():
        return EMPTY_ANSWER
    if not any(m["role"] == "user" for m in messages[:-1]):
        return NO_USER_TURN
    # As an empty text prompt is refused: the model would answer nothing.
    if not next(m for m in reversed(messages) if m["role"] == "user")["content"].strip():
        return EMPTY_QUESTION
    # The model is trained or asked to answer it as a turn the user said nothing in.
    if any(_blank_user_turn(m) for m in messages):
        return EMPTY_EARLIER_QUESTION
    # The model would learn from, or be shown, an exchange in which it said nothing
    # (often a row cut short by its export). A blank system turn is let through: chat
    # templates render it, and an empty system prompt is common.
    if any(_blank_assistant_turn(m) for m in messages):
        return EMPTY_EARLIER_ANSWER
    # As in every other text field (tasks/schemas.py).
    if any(_CONTROL_RE.search(m["content"]) for m in messages):
        return CONTROL_IN_MESSAGE
    if any(_SURROGATE_RE.search(m["content"]) for m in messages):
        return SURROGATE_IN_MESSAGE
    return None


def message_at_fault(problem: str, value: Any) -> Any:
    """The first message of a conversation cell that `problem` is about, else the cell.

    A problem's message shows the value cut to 80 characters, which for a conversation
    is its first turns: the message without a role, or with a number or a control
    character for content, is rarely among them (own-data trial: a bad content in the
    second message showed as "[{'role': 'user', 'content': '...'}, {'role': 'assi...")."""
    at_fault = {
        BAD_ROLE: _bad_role,
        BAD_CONTENT: _bad_content,
        # The first blank user turn, an earlier one when several are blank: either tells
        # that a TRL conversational prompt, which holds the user turns, is at fault.
        EMPTY_QUESTION: _blank_user_turn,
        EMPTY_EARLIER_QUESTION: _blank_user_turn,
        EMPTY_EARLIER_ANSWER: _blank_assistant_turn,
        CONTROL_IN_MESSAGE: lambda m: _CONTROL_RE.search(m["content"]),
        SURROGATE_IN_MESSAGE: lambda m: _SURROGATE_RE.search(m["content"]),
    }.get(problem)
    messages = as_messages(value)
    if at_fault is None or not messages:
        return value
    return next((m for m in messages if at_fault(m)), value)


def shared_prompt(
    chosen: list[dict[str, str]], rejected: list[dict[str, str]]
) -> list[dict[str, str]] | None:
    """The turns both conversations share before their final assistant turns, or None.

    HH-RLHF's chosen and rejected are the same conversation up to the last
    assistant turn; a pair that diverges earlier has no shared prompt.
    """
    prefix = chosen[:-1]
    if rejected[:-1] != prefix:
        return None
    return prefix


SPLIT_ROLES = ("system", "user")  # the turns a prompt's split key is made of


def split_key(prompt: str | list[dict[str, str]]) -> str:
    """What a prompt's split is drawn from: its content before any rendering, so that it
    lands on one side of the split whichever table and form it comes in.

    The contents of its system and user turns, each with its whitespace collapsed to single
    spaces, joined by blank lines (which no collapsed content holds); assistant turns are
    left out. Text is one user turn, unless it is HH-RLHF text, whose turns are read. So
    "Say hi." as text, as [{"role": "user", "content": "Say  hi. "}] (rendered through a
    chat template or not) and as "\n\nHuman: Say hi.\n\nAssistant:" share one key. A
    one-turn prompt's key is its text: a text prompt keeps the split it had when splits
    were drawn from the text as given (unless its whitespace was irregular).
    """
    return "\n\n".join(_collapsed(m) for m in _turns(prompt) if m["role"] in SPLIT_ROLES)


def prompt_key(prompt: str | list[dict[str, str]]) -> str:
    """What makes two prompts one prompt (one prompt id in the stage tables; a repeated row):
    split_key's content, with the turns split_key leaves out kept in place, each as a line
    of its own led by its role (no system or user content starts so: it is collapsed).

    A prompt without assistant turns (text, a system and a user turn: nearly every prompt)
    has its split_key as its key, so "Say hi." as text and as a conversation is one prompt
    here as it is one for the split. Two conversations that differ only in an earlier
    answer share a split but are two prompts: asked in other contexts, both are evaluated.
    """
    return "\n\n".join(
        _collapsed(m) if m["role"] in SPLIT_ROLES else f"\n{m['role']}: {_collapsed(m)}"
        for m in _turns(prompt)
        if m["role"] in SPLIT_ROLES or _collapsed(m)  # HH text's closing "Assistant:" is a cue
    )


def _turns(prompt: str | list[dict[str, str]]) -> list[dict[str, str]]:
    """The prompt's turns: text is one user turn, unless it is HH-RLHF text."""
    messages = as_messages(prompt) if isinstance(prompt, str) else prompt
    return [{"role": "user", "content": prompt}] if messages is None else messages


def _collapsed(message: dict[str, str]) -> str:
    return " ".join(message["content"].split())


def render(messages: list[dict[str, str]], tokenizer: Any = None) -> str:
    """The prompt text of the turns before a response.

    With a chat template: ``apply_chat_template(..., add_generation_prompt=True)``,
    minus a leading BOS (the pipeline's encoder adds the tokenizer's own
    special tokens, so keeping it would double it). Without: one user turn
    is its own text; longer conversations are ``Human: ...``/``Assistant: ...``
    turns separated by blank lines.
    """
    if has_chat_template(tokenizer):
        try:
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        except Exception as error:  # the template is the user's code: jinja2's TemplateError
            # (its raise_exception), or whatever its expressions raise on these messages
            raise TemplateRefused(_one_line(error)) from error
        bos = tokenizer.bos_token
        return text[len(bos) :] if bos and text.startswith(bos) else text
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n\n".join(f"{PLAIN_ROLE[m['role']]}: {m['content']}" for m in messages)


def readable(messages: list[dict[str, str]]) -> str:
    """The turns before a response as people read them: ``role: content`` blocks separated
    by blank lines (``system: be nice\n\nuser: name an animal``), whatever the template."""
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


def has_chat_template(tokenizer: Any) -> bool:
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


class TemplateRefused(ValueError):
    """The chat template raised on a conversation; the message is the template's own."""


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


@dataclass
class PromptRenderer:
    """`render` for the rows of a user's tables: a conversation the chat template refuses
    becomes a problem naming its file, row and field (every such row, not the first only),
    and the rows the template rendered are counted: the report says what was done."""

    tokenizer: Any = None
    problems: list[Problem] = field(default_factory=list)
    templated: Counter[str] = field(default_factory=Counter)  # file -> rows the template rendered
    written: dict[str, tuple[str, dict]] = field(default_factory=dict)  # file -> table, rows

    def keep_written(self, file: Any, table: str, rows: list) -> dict:
        """The rows of `table` as the user wrote them (row number -> row), kept for `named`."""
        self.written[str(file)] = (table, dict(rows))
        return self.written[str(file)][1]

    def named(self, as_written: Any) -> list[Problem]:
        """The problems, each naming the field its row was written with: a row read from a
        TRL form was rendered as the `messages` it became (trl_forms.as_written)."""
        named = []
        for problem in self.problems:
            table, rows = self.written.get(problem.file, ("", {}))
            named += as_written([problem], table, rows) if table else [problem]
        return named

    def __call__(
        self, messages: list[dict[str, str]], file: Any, row: int, where: str
    ) -> str | None:
        """The prompt text, or None when the template refused it (the problem is recorded)."""
        try:
            text = render(messages, self.tokenizer)
        except TemplateRefused as error:
            self.problems.append(Problem(str(file), row, where, f"{TEMPLATE_REFUSES}: {error}"))
            return None
        self.templated[str(file)] += has_chat_template(self.tokenizer)
        return text

    def how(self, rows: Counter[str]) -> str:
        """How the prompts of `rows` (file -> rows read) were made: 'chat_template' when the
        template rendered them all, 'plain' when it rendered none (a prompt given as text is
        used as it is; a conversation without a template is Human:/Assistant: text), else
        which files' rows were which. A template alone says nothing: text prompts skip it."""
        templated = {file: self.templated[file] for file in rows}
        if not any(templated.values()):
            return "plain"
        if templated == dict(rows):
            return "chat_template"
        ways = {
            "chat_template": [(file, t) for file, t in templated.items() if t],
            "plain": [(file, rows[file] - t) for file, t in templated.items() if rows[file] > t],
        }
        return ", ".join(
            f"{way} ({', '.join(f'{Path(file).name} {n} rows' for file, n in counts)})"
            for way, counts in ways.items()
        )

    def mixed_warnings(self, rows: Counter[str]) -> list[str]:
        """A warning when the template rendered the prompts of some of `rows` and not others."""
        how = self.how(rows)
        if how in ("plain", "chat_template"):
            return []
        return [
            f"prompts are rendered two ways, {how}: the policy is trained on one format and"
            " sampled and judged on the other (give every table conversations, or every table"
            " text)"
        ]
