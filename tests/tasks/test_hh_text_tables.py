"""Prompts and demonstrations whose `prompt` is HH-RLHF text (Dahoas/rm-static's form)."""

import json
from pathlib import Path

from instructflow.tasks.dataset import load_dataset
from tests.tasks.test_trl_forms import _tasks


def _write(folder: Path, name: str, rows: list[dict]) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _turns(prompt: str, i: int) -> list[dict]:
    """Every other row multi-turn, as HH's are."""
    opening = [{"role": "user", "content": "Hello."}, {"role": "assistant", "content": "Hi."}]
    return [*(opening if i % 2 else []), {"role": "user", "content": prompt}]


def _hh(turns: list[dict]) -> str:
    marker = {"user": "Human", "assistant": "Assistant"}
    return "".join(f"\n\n{marker[t['role']]}: {t['content']}" for t in turns) + "\n\nAssistant:"


def test_hh_text_prompts_and_demonstrations_load_as_the_same_conversations(tmp_path):
    # given one dataset with message lists, and the same with HH text prompts
    rows = _tasks(120)
    preferences = [{"prompt": p, "chosen": g, "rejected": b, "user_id": u} for u, p, g, b in rows]
    messages, hh = tmp_path / "messages", tmp_path / "hh"
    for folder in (messages, hh):
        _write(folder, "preferences", preferences)
    _write(messages, "prompts", [
        {"messages": _turns(p, i), "user_id": u} for i, (u, p, _, _) in enumerate(rows)
    ])  # fmt: skip
    _write(hh, "prompts", [
        {"prompt": _hh(_turns(p, i)), "user_id": u} for i, (u, p, _, _) in enumerate(rows)
    ])  # fmt: skip
    _write(messages, "demonstrations", [
        {"messages": [*_turns(p, i), {"role": "assistant", "content": g}], "user_id": u}
        for i, (u, p, g, _) in enumerate(rows)
    ])  # fmt: skip
    _write(hh, "demonstrations", [
        {"prompt": _hh(_turns(p, i)), "response": f" {g}", "user_id": u}
        for i, (u, p, g, _) in enumerate(rows)
    ])  # fmt: skip
    # when both load
    ours, theirs = load_dataset(messages), load_dataset(hh)
    # then HH text became the conversations (not "Human:" markup inside the Q/A frame)
    for table in ("prompts", "demonstrations"):
        seen = [(i.prompt, i.responses, i.readable_prompt) for i in getattr(theirs, table)]
        assert seen == [(i.prompt, i.responses, i.readable_prompt) for i in getattr(ours, table)]
    assert theirs.prompts[0].readable_prompt == f"user: {rows[0][1]}"  # its turns, no HH markup
    assert theirs.summary["trl_forms"] == {"prompts": 120, "demonstrations": 120}
