"""pandera schemas for every table the pipeline reads (DESIGN.md section 4).

One ``DataFrameSchema`` per table kind, strict about columns. Every check is
written so that ``instructflow.tasks.tables`` can point at one cell:

* columns carry no pandera dtype (``dtype=None``); types are checked element
  by element instead. A dtype check fails for the whole column at once
  ("object is not str"), while an element-wise ``isinstance`` check names the
  row that holds the wrong value.
* each check only judges its own property and passes values of the wrong
  type, so one bad cell yields one message, not a cascade.
* nothing here raises on odd values (lists in id columns, nulls): pandera
  turns an exception inside a check into a failure with no row, and its own
  ``unique=True`` crashes outright on unhashable values, hence ``_unique``.
* a cross-column (row-wise) check is reported by pandera once per column of
  the row; ``ROW_CHECK_FIELDS`` says which field such a check is about.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pandas as pd
import pandera.pandas as pa

SPLITS = ("train", "valid", "test")
# The Hub's and other tools' names of the validation split, read as `valid` in a user's
# `split` column and in file names (a dataset exported from the Hub says "validation").
SPLIT_ALIASES = {"validation": "valid", "val": "valid", "dev": "valid"}


def canonical_split(value: Any) -> Any:
    """Our split for a split name in any case or alias (`Train`, `Validation`, `dev`: Hub
    exports and other tools capitalise them); anything else as it is (the schema names it)."""
    if not isinstance(value, str):
        return value
    word = value.strip().lower()
    word = SPLIT_ALIASES.get(word, word)
    return word if word in SPLITS else value


MIN_K = 4  # InstructGPT shows labelers between 4 and 9 responses per prompt
MAX_K = 9
KINDS = (
    "prompts",
    "demonstrations",
    "comparisons",
    "pairwise",
    "pretrain",
    "public_suite",
    "mixture",
)

# Error text of each check; tables.py keys its special cases on these.
NOT_A_STRING = "must be a string"
NOT_AN_INT = "must be an integer"
EMPTY = "empty after stripping whitespace"
CONTROL_CHARS = r"contains a control character (only \n, \r\n and \t are allowed)"
SURROGATE = "contains a lone surrogate (not valid Unicode)"
DUPLICATE = "duplicate value (must be unique)"

# Row-wise check error text -> the field the problem is reported on.
ROW_CHECK_FIELDS: dict[str, str] = {}

# C0/C1 control characters except \t (0x09), \n (0x0a) and \r (0x0d) right before \n.
# A Windows line break is ordinary text in web-scraped Hub datasets (and TRL trains
# on it), so it is kept as written; a lone \r is a sign of a bad conversion.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]|\r(?!\n)")
_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")


def _is_int(value: Any) -> bool:
    # JSON true/false load as bool, a subclass of int: not an index.
    return isinstance(value, int) and not isinstance(value, bool)


def _element(fn: Callable[[Any], bool], error: str) -> pa.Check:
    return pa.Check(fn, element_wise=True, error=error)


def _row_check(field: str, fn: Callable[[pd.Series], bool], error: str) -> pa.Check:
    """A check on whole rows, reported on ``field``."""
    ROW_CHECK_FIELDS[error] = field
    return pa.Check(fn, element_wise=True, error=error)


def _unique() -> pa.Check:
    """Uniqueness among string values; every copy of a duplicate fails."""

    def check(series: pd.Series) -> pd.Series:
        is_str = series.map(lambda v: isinstance(v, str)).astype(bool)
        ok = pd.Series(True, index=series.index)
        ok[is_str] = ~series[is_str].duplicated(keep=False)
        return ok

    return pa.Check(check, error=DUPLICATE)


def _string_checks(*, allow_empty: bool = False) -> list[pa.Check]:
    """A str, optionally non-empty after strip, with no control characters."""
    checks = [_element(lambda v: isinstance(v, str), NOT_A_STRING)]
    if not allow_empty:
        checks.append(_element(lambda v: not isinstance(v, str) or bool(v.strip()), EMPTY))
    checks += [
        _element(lambda v: not isinstance(v, str) or not _CONTROL_RE.search(v), CONTROL_CHARS),
        _element(lambda v: not isinstance(v, str) or not _SURROGATE_RE.search(v), SURROGATE),
    ]
    return checks


def _text(description: str, *, allow_empty: bool = False) -> pa.Column:
    return pa.Column(checks=_string_checks(allow_empty=allow_empty), description=description)


def _id(description: str) -> pa.Column:
    return pa.Column(checks=[*_string_checks(), _unique()], description=description)


def _good_text(value: Any, allow_empty: bool = False) -> bool:
    """What ``_string_checks`` accepts, for strings nested in lists."""
    return (
        isinstance(value, str)
        and (allow_empty or bool(value.strip()))
        and not _CONTROL_RE.search(value)
        and not _SURROGATE_RE.search(value)
    )


def _split() -> pa.Column:
    return pa.Column(
        checks=[
            _element(lambda v: isinstance(v, str), NOT_A_STRING),
            _element(lambda v: not isinstance(v, str) or v in SPLITS, f"must be one of {SPLITS}"),
        ],
        description="Which split the prompt's user belongs to: train, valid or test.",
    )


def _prompt_columns() -> dict[str, pa.Column]:
    return {
        "prompt_id": _id("Unique id of the prompt."),
        "user_id": _text(
            "Who wrote the prompt; a user belongs to exactly one split, which is what"
            " keeps test users' prompts out of training."
        ),
        "split": _split(),
        "family": _text("The task family of the prompt (generation, QA, ...)."),
        "prompt": _text("The user's instruction, as shown to the model."),
    }


def _labeler() -> pa.Column:
    return _text("Who wrote the demonstration / ranked the responses.")


def prompts_schema() -> pa.DataFrameSchema:
    """Prompt tables (sft/rm/ppo train+valid, eval/test)."""
    return pa.DataFrameSchema(_prompt_columns(), strict=True, name="prompts")


def demonstrations_schema() -> pa.DataFrameSchema:
    """Labeler-written demonstrations for supervised fine-tuning."""
    columns = _prompt_columns()
    columns["response"] = _text("The labeler's demonstration of the desired output.")
    columns["labeler_id"] = _labeler()
    return pa.DataFrameSchema(columns, strict=True, name="demonstrations")


def comparisons_schema(min_k: int = MIN_K, max_k: int = MAX_K) -> pa.DataFrameSchema:
    """K responses to one prompt ranked by a labeler, MIN_K <= K <= MAX_K."""
    k_error = f"must be a list of {min_k} to {max_k} responses"
    ranking_error = "must be a permutation of 0..K-1 (K = number of responses), best first"

    def k_ok(v: Any) -> bool:
        return not isinstance(v, list) or min_k <= len(v) <= max_k

    def ranking_ok(row: pd.Series) -> bool:
        responses, ranking = row["responses"], row["ranking"]
        if not isinstance(responses, list) or not isinstance(ranking, list):
            return True  # the column checks report the wrong type
        return sorted(ranking) == list(range(len(responses)))

    columns = _prompt_columns()
    del columns["family"]
    # Several labelers may rank the same prompt's responses: the comparison is unique, the prompt need not be.
    columns["prompt_id"] = _text("Id of the prompt whose K responses are ranked.")
    columns = {"comparison_id": _id("Unique id of the comparison."), **columns}
    columns["responses"] = pa.Column(
        checks=[
            _element(lambda v: isinstance(v, list), "must be a list of strings"),
            _element(k_ok, k_error),
            _element(
                # A policy may answer with nothing (labelers rank that last), so an
                # empty response is data here; broken text is not.
                lambda v: (
                    not isinstance(v, list) or all(_good_text(r, allow_empty=True) for r in v)
                ),
                "every response must be a string without control characters",
            ),
        ],
        description=f"The K sampled responses, {min_k} <= K <= {max_k}.",
    )
    columns["ranking"] = pa.Column(
        checks=[
            _element(
                lambda v: isinstance(v, list) and all(_is_int(i) for i in v),
                "must be a list of integers",
            )
        ],
        description="Indices into responses, best first: a permutation of 0..K-1.",
    )
    columns["labeler_id"] = _labeler()
    return pa.DataFrameSchema(
        columns,
        checks=[_row_check("ranking", ranking_ok, ranking_error)],
        strict=True,
        name="comparisons",
    )


def pairwise_schema() -> pa.DataFrameSchema:
    """Human preference pairs as imported from outside (chosen > rejected)."""
    same_error = "is identical to 'chosen' after stripping whitespace"

    def differ(row: pd.Series) -> bool:
        chosen, rejected = row["chosen"], row["rejected"]
        if not isinstance(chosen, str) or not isinstance(rejected, str):
            return True
        return chosen.strip() != rejected.strip()

    columns = {
        "prompt_id": _text("Id of the prompt (pairs of one prompt share it)."),
        "user_id": _text("Who wrote the prompt."),
        "prompt": _text("The prompt both responses answer."),
        "chosen": _text("The preferred response."),
        "rejected": _text("The dispreferred response; must differ from chosen."),
    }
    return pa.DataFrameSchema(
        columns,
        checks=[_row_check("rejected", differ, same_error)],
        strict=True,
        name="pairwise",
    )


def pretrain_schema() -> pa.DataFrameSchema:
    """Pretraining documents (the ptx term of PPO-ptx, and LM pretraining)."""
    return pa.DataFrameSchema(
        {"doc_id": _id("Unique id of the document."), "text": _text("The document text.")},
        strict=True,
        name="pretrain",
    )


def public_suite_schema() -> pa.DataFrameSchema:
    """Multiple-choice items of the held-out "public NLP" evaluation suite."""
    answer_error = "must be an index into choices (0 <= answer < len(choices))"

    def choices_ok(v: Any) -> bool:
        if not isinstance(v, list):
            return True
        return len(v) >= 2 and all(_good_text(c) for c in v) and len(set(v)) == len(v)

    def answer_ok(row: pd.Series) -> bool:
        choices, answer = row["choices"], row["answer"]
        if not isinstance(choices, list) or not _is_int(answer):
            return True
        return 0 <= answer < len(choices)

    columns = {
        "item_id": _id("Unique id of the item."),
        "task": _text("Which task of the suite the item belongs to."),
        "context": _text("Text shown before the choices; may be empty.", allow_empty=True),
        "choices": pa.Column(
            checks=[
                _element(lambda v: isinstance(v, list), "must be a list of strings"),
                _element(
                    choices_ok,
                    "must hold at least 2 distinct non-empty strings without control characters",
                ),
            ],
            description="The candidate answers: >= 2 distinct non-empty strings.",
        ),
        "answer": pa.Column(
            checks=[_element(_is_int, NOT_AN_INT)],
            description="Index of the correct choice.",
        ),
    }
    return pa.DataFrameSchema(
        columns,
        checks=[_row_check("answer", answer_ok, answer_error)],
        strict=True,
        name="public_suite",
    )


def mixture_schema() -> pa.DataFrameSchema:
    """Baseline instruction mixtures (FLAN, T0) used to fine-tune baselines."""
    columns = {
        "example_id": _id("Unique id of the example."),
        "family": _text("The task family the example was drawn from."),
        "prompt": _text("The templated instruction."),
        "response": _text("The target output."),
    }
    return pa.DataFrameSchema(columns, strict=True, name="mixture")


def schema_for(kind: str, *, k_range: tuple[int, int] = (MIN_K, MAX_K)) -> pa.DataFrameSchema:
    """The schema of a table kind (one of KINDS); k_range only affects comparisons."""
    builders: dict[str, Callable[[], pa.DataFrameSchema]] = {
        "prompts": prompts_schema,
        "demonstrations": demonstrations_schema,
        "comparisons": lambda: comparisons_schema(*k_range),
        "pairwise": pairwise_schema,
        "pretrain": pretrain_schema,
        "public_suite": public_suite_schema,
        "mixture": mixture_schema,
    }
    if kind not in builders:
        raise ValueError(f"unknown table kind {kind!r}; expected one of {KINDS}")
    return builders[kind]()
