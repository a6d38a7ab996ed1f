"""pandera schemas of a user's dataset tables, and how a preferences table's shape is recognised.

These validate the tables as the user wrote them (JSONL or Parquet), before
they are normalised to the pipeline's own tables (instructflow.tasks.schemas). Optional
columns may be absent or null; other columns are ignored (and listed in the
data summary), so an export from another tool with extra metadata loads.
Checks follow instructflow.tasks.schemas' rules: element-wise, one message per bad cell,
row-wise checks registered with the field they are about.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import pandera.pandas as pa

from instructflow.tasks import schemas
from instructflow.tasks.conversations import (
    CONVERSATION_PROBLEMS,
    EMPTY_CONVERSATION,
    NO_USER_TURN,
    conversation_problem,
)
from instructflow.tasks.schemas import (
    _CONTROL_RE,
    _SURROGATE_RE,
    SPLIT_ALIASES,
    SPLITS,
    _good_text,
    _row_check,
    canonical_split,
)

MIN_K, MAX_K = 2, 9  # K = 2 is one pair: the K-wise loss with C(2,2) = 1
TABLES = ("prompts", "demonstrations", "preferences")
OPTIONAL_TABLES = ("pretrain", "flan", "t0")
SHAPES = ("ranking", "pairwise", "conversation")


def _null(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def _check(fn: Callable[[Any], bool], error: str, required: bool = True) -> pa.Check:
    """An element-wise check; in an optional column a null passes."""
    if required:
        return pa.Check(fn, element_wise=True, error=error)
    return pa.Check(lambda v: _null(v) or fn(v), element_wise=True, error=error)


def _text(
    description: str,
    required: bool = True,
    not_text: str = schemas.NOT_A_STRING,
    empty: str = schemas.EMPTY,
) -> pa.Column:
    """A non-empty string without control characters (one message per problem, as in
    instructflow.tasks.schemas); `not_text` and `empty` word those two for a column whose
    purpose the message should say."""
    checks = [
        _check(lambda v: isinstance(v, str), not_text, required),
        _check(lambda v: not isinstance(v, str) or bool(v.strip()), empty, required),
        _check(
            lambda v: not isinstance(v, str) or not _CONTROL_RE.search(v),
            schemas.CONTROL_CHARS,
            required,
        ),
        _check(
            lambda v: not isinstance(v, str) or not _SURROGATE_RE.search(v),
            schemas.SURROGATE,
            required,
        ),
    ]
    return pa.Column(
        checks=checks, required=required, nullable=not required, description=description
    )


NOT_AN_ID = "must be a string or an integer"


def _integral(value: Any) -> bool:
    """An int, or a float holding one: a Parquet integer column with a null reads as float64."""
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, int) and not isinstance(value, bool)


def identifier(value: Any) -> str | None:
    """An id column's value as text: Hub tables often number users and labelers."""
    if _null(value):
        return None
    return str(int(value)) if _integral(value) else value


def _id(description: str, not_id: str = NOT_AN_ID, empty: str = schemas.EMPTY) -> pa.Column:
    """An optional id: text (checked as `_text` checks it) or an integer."""
    text = _text(description, required=False, empty=empty)
    checks = [
        _check(lambda v: isinstance(v, str) or _integral(v), not_id, required=False),
        *(c for c in text.checks if c.error != schemas.NOT_A_STRING),
    ]
    return pa.Column(checks=checks, required=False, nullable=True, description=description)


# A bad `category` says what the column is for: it is optional, and its use on a user's
# data (which demonstrations base_fewshot's prefix shows) is not what "category" suggests.
CATEGORY_NOT_TEXT = (
    "must be text (or an integer, such as a Hub label id) naming the prompt's task family"
    " (base_fewshot's prefix shows one demonstration per family), or null for none"
)
CATEGORY_EMPTY = "is empty: name the prompt's task family, or give null for none"


def _common() -> dict[str, pa.Column]:
    """Columns any table may carry."""
    return {
        "prompt_id": _id("Your id of the prompt (kept as metadata)."),
        "user_id": _id("Who wrote the prompt: splits are by user when every row has one."),
        "split": pa.Column(
            checks=[
                _check(
                    lambda v: canonical_split(v) in SPLITS,
                    f"must be one of {SPLITS} (or {', '.join(map(repr, SPLIT_ALIASES))} for"
                    " valid; in any case)",
                    required=False,
                )
            ],
            required=False,
            nullable=True,
            description="train, valid (or validation, val, dev) or test, in any case; rows "
            "without one are split by hash.",
        ),
        "category": _id(
            "Optional: the prompt's task family, as text or an integer (read as text). On your"
            " data its one use is base_fewshot's prefix, which shows one demonstration per"
            " family (rows without one share the family 'default'); per-family gold scores are"
            " the embedded world's.",
            not_id=CATEGORY_NOT_TEXT,
            empty=CATEGORY_EMPTY,
        ),
        "labeler_id": _id("Who wrote or ranked the responses."),
    }


def _conversation(
    description: str,
    required: bool = True,
    problem_of: Callable[[Any], str | None] = conversation_problem,
    problems: tuple[str, ...] = CONVERSATION_PROBLEMS,
) -> pa.Column:
    """One check per kind of problem, so the message says which (each passes the others)."""

    def passes(problem: str) -> Callable[[Any], bool]:
        return lambda v: problem_of(v) != problem

    checks = [_check(passes(problem), problem, required) for problem in problems]
    return pa.Column(checks=checks, nullable=not required, description=description)


NOT_MESSAGES = "must be a list of {role, content} messages"
NOT_USER_LAST = "does not end on a user turn (the turn the model answers)"
PROMPT_CONVERSATION_PROBLEMS = (NOT_MESSAGES, NOT_USER_LAST, *CONVERSATION_PROBLEMS)
_ANSWER = {"role": "assistant", "content": "answer"}


def prompt_conversation_problem(value: Any) -> str | None:
    """The problem of a conversation that is a prompt (TRL's conversational prompt-only form).

    Checked as the conversation it starts, answered: the same message rules
    as a conversation in demonstrations or preferences, plus its last turn
    is the user's. HH text is a whole conversation, so a prompt is a list.
    """
    if not isinstance(value, list):
        return NOT_MESSAGES
    problem = conversation_problem([*value, _ANSWER]) if value else EMPTY_CONVERSATION
    # No user turn at all (a system turn alone): the answer it names is the one added here.
    if problem in (None, NO_USER_TURN) and value[-1]["role"] != "user":
        return NOT_USER_LAST
    return problem


ONE_PROMPT = "needs either messages or prompt"


def _one_prompt(row: pd.Series) -> bool:
    return _null(row.get("messages")) != _null(row.get("prompt"))


def prompts_schema(columns_present: set[str]) -> pa.DataFrameSchema:
    """A `prompt` text, or a `messages` conversation ending on a user turn (rows may mix)."""
    columns = _common()
    if "messages" not in columns_present:
        return pa.DataFrameSchema(
            {"prompt": _text("The user's instruction."), **columns}, name="prompts"
        )
    columns["messages"] = _conversation(
        "The conversation the model answers next (TRL's conversational prompt).",
        required=False,
        problem_of=prompt_conversation_problem,
        problems=PROMPT_CONVERSATION_PROBLEMS,
    )
    columns["prompt"] = _text("The instruction (rows without messages).", required=False)
    checks = [_row_check("messages", _one_prompt, ONE_PROMPT)]
    return pa.DataFrameSchema(columns, checks=checks, name="prompts")


ONE_FORM = "needs either messages or both prompt and response"
# A row with both: "needs either ..." read as if one were missing.
BOTH_FORMS = "has both messages and prompt + response (or completion): give each row one of them"


def _forms(row: pd.Series) -> tuple[bool, bool]:
    """Whether a demonstration has its messages, and its prompt + response."""
    has_pair = not _null(row.get("prompt")) and not _null(row.get("response"))
    return not _null(row.get("messages")), has_pair


def _one_form(row: pd.Series) -> bool:
    return any(_forms(row))


def _not_both_forms(row: pd.Series) -> bool:
    return not all(_forms(row))


def demonstrations_schema(columns_present: set[str]) -> pa.DataFrameSchema:
    """prompt + response, or a `messages` conversation ending on the demonstrated answer (rows may mix)."""
    columns = _common()
    if "messages" not in columns_present:
        columns["prompt"] = _text("The instruction.")
        columns["response"] = _text("The demonstrated answer.")
        return pa.DataFrameSchema(columns, name="demonstrations")
    columns["messages"] = _conversation("The conversation; its last turn is the answer.", False)
    columns["prompt"] = _text("The instruction (rows without messages).", required=False)
    columns["response"] = _text("The answer (rows without messages).", required=False)
    checks = [
        _row_check("messages", _one_form, ONE_FORM),
        _row_check("messages", _not_both_forms, BOTH_FORMS),
    ]
    return pa.DataFrameSchema(columns, checks=checks, name="demonstrations")


def _ranking_schema() -> pa.DataFrameSchema:
    k_error = f"must be a list of {MIN_K} to {MAX_K} non-empty responses"
    perm_error = "must be a permutation of 0..K-1 (K = number of responses), best first"

    def responses_ok(v: Any) -> bool:
        return isinstance(v, list) and MIN_K <= len(v) <= MAX_K and all(_good_text(r) for r in v)

    def ranking_ok(row: pd.Series) -> bool:
        responses, ranking = row["responses"], row["ranking"]
        if not isinstance(responses, list) or not isinstance(ranking, list):
            return True  # the column checks report the wrong type
        # Whole floats too ([0.0, 2.0, 1.0]): pandas writes a list built from a float array so.
        return all(_integral(i) for i in ranking) and sorted(ranking) == list(range(len(responses)))

    columns = {
        "prompt": _text("The prompt the responses answer."),
        "responses": pa.Column(checks=[_check(responses_ok, k_error)]),
        "ranking": pa.Column(checks=[_check(lambda v: isinstance(v, list), "must be a list")]),
        **_common(),
    }
    return pa.DataFrameSchema(
        columns, checks=[_row_check("ranking", ranking_ok, perm_error)], name="preferences"
    )


def _number() -> pa.Column:
    def ok(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    return pa.Column(
        checks=[_check(ok, "must be a number", required=False)], required=False, nullable=True
    )


# A pair's own scores, in either pair shape (ultrafeedback_binarized has them beside its
# message lists): kept as metadata, and a tie by them is warned about (splits.tied_scores).
SCORES = ("score_chosen", "score_rejected", "margin")


def _pairwise_schema() -> pa.DataFrameSchema:
    columns = {
        "prompt": _text("The prompt both responses answer."),
        "chosen": _text("The preferred response."),
        "rejected": _text("The dispreferred response."),
        **{name: _number() for name in SCORES},
        **_common(),
    }
    return pa.DataFrameSchema(
        columns, checks=[_row_check("rejected", _differ, IDENTICAL)], name="preferences"
    )


IDENTICAL = "is identical to 'chosen'"


def _differ(row: pd.Series) -> bool:
    chosen, rejected = row["chosen"], row["rejected"]
    if isinstance(chosen, str) and isinstance(rejected, str):
        return chosen.strip() != rejected.strip()
    return chosen != rejected


def _conversation_schema() -> pa.DataFrameSchema:
    columns = {
        "chosen": _conversation("The preferred conversation."),
        "rejected": _conversation("The dispreferred conversation (same prompt turns)."),
        **{name: _number() for name in SCORES},
        **_common(),
    }
    return pa.DataFrameSchema(
        columns, checks=[_row_check("rejected", _differ, IDENTICAL)], name="preferences"
    )


def preference_shape(columns: set[str]) -> str | None:
    """Which of SHAPES a preferences table is, from its columns; None if none fits."""
    if {"responses", "ranking"} <= columns:
        return "ranking"
    if {"prompt", "chosen", "rejected"} <= columns:
        return "pairwise"
    if {"chosen", "rejected"} <= columns:
        return "conversation"
    return None


def preferences_schema(shape: str) -> pa.DataFrameSchema:
    return {
        "ranking": _ranking_schema,
        "pairwise": _pairwise_schema,
        "conversation": _conversation_schema,
    }[shape]()


def text_schema() -> pa.DataFrameSchema:
    """An optional pretraining table: one document per row, and the split it states (its
    valid and test documents measure perplexity, never PPO-ptx's mix)."""
    columns = {"text": _text("A pretraining document."), "split": _common()["split"]}
    return pa.DataFrameSchema(columns, name="pretrain")


def mixture_schema() -> pa.DataFrameSchema:
    """An optional FLAN- or T0-style mixture: templated prompt + target."""
    columns = {"prompt": _text("The templated instruction."), "response": _text("The target.")}
    return pa.DataFrameSchema(columns, name="mixture")
