"""Values pydantic would quietly turn into others, refused as the field's own problem.

Pydantic's lax mode reads `true` as the integer 1 (`{"ppo": {"iterations": true}}` ran one
PPO iteration), lets an infinite number pass a `> 0` bound (`{"ppo": {"lr": 1e400}}`
passed the settings check, then failed PPO-ptx with a NaN loss after the other stages had
trained) and reads text as a number or a bool (`{"ppo": {"lr": "1e-4"}}`, `"epochs": "3"`,
`"auto_promote": "no"`: a template's placeholder left quoted, taken without a word). A NaN
was already refused: no bound holds for it. These checks walk the sent fields against the
models' annotations, before pydantic converts them.
"""

from __future__ import annotations

import json
import math
import types
import typing
from typing import Any

from pydantic import BaseModel


def _types_of(annotation: Any) -> set[Any]:
    """The plain types an annotation admits (`int | None` -> {int, NoneType})."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_types_of(arg) for arg in typing.get_args(annotation)))
    return {origin or annotation}


def _nested_model(kinds: set[Any]) -> type[BaseModel] | None:
    return next((k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)), None)


# The types a string is refused for: a field admitting only these takes no text.
_NOT_TEXT = {int, float, bool, type(None)}


def _refused(kinds: set[Any], value: Any) -> bool:
    numeric = bool(kinds & {int, float})
    if isinstance(value, str):  # text where only a number or a bool belongs
        return bool(kinds & {int, float, bool}) and kinds <= _NOT_TEXT
    if isinstance(value, bool):  # a bool is an int to Python: test it first
        return numeric and bool not in kinds
    return isinstance(value, float) and float in kinds and not math.isfinite(value)


def converted_values(model: type[BaseModel], sent: Any, prefix: tuple[str, ...] = ()) -> list:
    """The dotted locations (as tuples) of the sent values pydantic would convert or let
    through where the field's type does not hold them: a bool for a number, an infinity,
    text for a number or a bool."""
    if not isinstance(sent, dict):
        return []
    found = []
    for name, value in sent.items():
        field = model.model_fields.get(name) if isinstance(name, str) else None
        if field is None:
            continue  # an unknown field: pydantic names it
        kinds = _types_of(field.annotation)
        nested = _nested_model(kinds)
        if nested is not None and isinstance(value, dict):
            found += converted_values(nested, value, (*prefix, name))
        elif _refused(kinds, value):
            found.append(((*prefix, name), value))
    return found


def unquoted(value: Any) -> str | None:
    """The text of a quoted number or bool as the user wrote it (`"1e-4"` -> `1e-4`), for a
    hint to drop the quotes; None for other values (`"abc"`, `"inf"`, a number)."""
    if not isinstance(value, str):
        return None
    try:
        meant = json.loads(value)
    except ValueError:
        return None
    if isinstance(meant, bool) or (isinstance(meant, int | float) and math.isfinite(meant)):
        return value.strip()
    return None
