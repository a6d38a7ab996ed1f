"""A user's table rows, once valid, as Items: one prompt (text, or rendered from its
conversation) and zero or more ranked responses, with what the split, the length check
and the layout need to know of the row.

One function per table kind: `preference_items` (the three preference shapes),
`prompt_items` and `demonstration_items` (text or a `messages` conversation). A
conversation's prompt turns are rendered by a PromptRenderer (the base model's chat
template, or plain text); a row whose conversation the template refuses is left out
here and named by the renderer as a problem of that row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instructflow.tasks import dataset_schemas as ds
from instructflow.tasks.conversations import (
    PromptRenderer,
    as_messages,
    prompt_key,
    readable,
    shared_prompt,
    split_key,
)
from instructflow.tasks.schemas import canonical_split


@dataclass
class Item:
    """One row of a user's table, normalised: a prompt and zero or more ranked responses."""

    file: str
    row: int
    prompt: str
    responses: list[str]
    ranking: list[int]
    user_id: str | None
    stated_split: str | None
    category: str | None
    labeler_id: str | None
    response_field: str = "response"  # where a too-long response is reported
    prompt_field: str = "prompt"  # where a too-long prompt is reported
    meta: dict[str, Any] = field(default_factory=dict)
    # A conversation's prompt as people read it (conversations.readable: no template markup);
    # None when the row gave the prompt as text, which people read as the model does.
    readable_prompt: str | None = None
    # What its split is drawn from without user ids: the prompt before rendering or cutting
    # (conversations.split_key), so one prompt is on one side in every table and form.
    split_key: str = ""
    prompt_key: str = ""  # which prompt it is (conversations.prompt_key): its id, repeats
    turns: list[dict[str, str]] | None = None  # the conversation `prompt` was rendered from


def _item(
    path: Path,
    row: int,
    obj: dict,
    prompt: str,
    responses: list[str],
    where: str,
    prompt_where: str = "prompt",
    messages: list[dict[str, str]] | None = None,
    **meta,
) -> Item:
    """The row as an Item; `messages`: the conversation turns `prompt` was rendered from."""
    return Item(
        readable_prompt=readable(messages) if messages is not None else None,
        turns=messages,
        split_key=split_key(messages if messages is not None else prompt),
        prompt_key=prompt_key(messages if messages is not None else prompt),
        response_field=where,
        prompt_field=prompt_where,
        file=str(path),
        row=row,
        prompt=prompt,
        # as conversation answers are: a text answer's leading space (TRL's prompt +
        # completion form) would follow the frame's own space: "A:  answer"
        responses=[r.strip() for r in responses],
        ranking=list(range(len(responses))),
        user_id=ds.identifier(obj.get("user_id")),
        stated_split=canonical_split(obj.get("split")),
        category=ds.identifier(obj.get("category")),  # a Hub label id 3 is the family "3"
        labeler_id=ds.identifier(obj.get("labeler_id")),
        meta=meta,
    )


def _conversation_items(path, rows, render: PromptRenderer) -> tuple[list[Item], list[int]]:
    """Pairwise conversations: the shared turns are the prompt. Returns items and the numbers
    of the rows with none."""
    items, unshared = [], []
    for row, obj in rows:
        chosen, rejected = as_messages(obj["chosen"]), as_messages(obj["rejected"])
        prefix = shared_prompt(chosen, rejected)
        if prefix is None:
            unshared.append(row)
            continue
        answers = [chosen[-1]["content"].strip(), rejected[-1]["content"].strip()]
        if (prompt := render(prefix, path, row, "chosen")) is not None:
            scores = _scores(obj)
            items.append(
                _item(path, row, obj, prompt, answers, "chosen", "chosen", prefix, **scores)
            )
    return items, unshared


def _scores(obj: dict) -> dict[str, Any]:
    """The pair's own scores, as metadata (splits.tied_scores reads them)."""
    return {k: obj[k] for k in ds.SCORES if k in obj}


def preference_items(path, rows, shape, render: PromptRenderer) -> tuple[list[Item], list[int]]:
    """The preferences of one of dataset_schemas' shapes as Items (a pair: K = 2), and the rows
    of the conversation pairs left out for sharing no prompt turns (`no_shared_prefix`)."""
    if shape == "conversation":
        return _conversation_items(path, rows, render)
    items = []
    for row, obj in rows:
        if shape == "ranking":
            item = _item(path, row, obj, obj["prompt"], list(obj["responses"]), "responses")
            item.ranking = [int(i) for i in obj["ranking"]]
        else:
            pair = [obj["chosen"], obj["rejected"]]
            item = _item(path, row, obj, obj["prompt"], pair, "chosen", **_scores(obj))
        items.append(item)
    return items, []


def prompt_items(path, rows, render: PromptRenderer) -> list[Item]:
    """Prompt texts, and conversations rendered as the prompt turns of a preference are."""
    items = []
    for row, obj in rows:
        if obj.get("messages") is None:
            items.append(_item(path, row, obj, obj["prompt"], [], "prompt"))
        elif (prompt := render(obj["messages"], path, row, "messages")) is not None:
            turns = obj["messages"]
            items.append(_item(path, row, obj, prompt, [], "messages", "messages", turns))
    return items


def demonstration_items(path, rows, render: PromptRenderer) -> list[Item]:
    """A demonstration's prompt and its one answer (a conversation's last assistant turn)."""
    items = []
    for row, obj in rows:
        if obj.get("messages") is not None:
            messages = as_messages(obj["messages"])
            prompt = render(messages[:-1], path, row, "messages")
            if prompt is not None:  # else the chat template refused it: a problem of this row
                answer = [messages[-1]["content"].strip()]
                turns = messages[:-1]
                items.append(_item(path, row, obj, prompt, answer, "messages", "messages", turns))
        else:
            items.append(_item(path, row, obj, obj["prompt"], [obj["response"]], "response"))
    return items
