"""Length checks of a user's rows against the base model's context, at validation time.

A row fits when every (prompt, response) pair, encoded exactly as SFT and the
reward model encode it (instructflow.models.batching.encode_pair: prompt format, response,
EOS), fits the context, and when the prompt leaves room for `max_new_tokens`
of sampling (comparisons, PPO and evaluation continue from the prompt).
What happens to a row that does not fit is a setting (DatasetConfig.overlong):
refuse the dataset naming the row, drop the row, or cut the start of the
prompt (the end of a prompt is what the response answers). A conversation is cut
by whole turns, its earliest first (a system turn kept), so the chat template's
markup stays whole; only when its last user turn alone does not fit is the
rendered text's start cut.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from instructflow.models.batching import encode_pair, encode_prompt
from instructflow.models.formatting import format_prompt
from instructflow.tasks.conversations import TemplateRefused, readable, render
from instructflow.tasks.tables import Problem


@dataclass(frozen=True)
class LengthCheck:
    tokenizer: Any
    max_len: int  # the model's context (or a smaller configured maximum)
    max_new_tokens: int  # room a prompt must leave for sampling

    def prompt_tokens(self, prompt: str) -> int:
        """Tokens of the prompt as sampling continues from it."""
        return len(encode_prompt(self.tokenizer, format_prompt(prompt, self.tokenizer)))

    def prompt_tokens_after(self, prefix: str, prompt: str) -> int:
        """Tokens of the prompt behind `prefix` (few-shot examples), as sampling reads it."""
        return len(encode_prompt(self.tokenizer, prefix + format_prompt(prompt, self.tokenizer)))

    def pair_tokens(self, prompt: str, response: str) -> int:
        """Tokens of prompt + response + EOS as SFT and the reward model train on them."""
        return len(encode_pair(self.tokenizer, prompt, response, 10**9)[0])

    def need(self, prompt: str, responses: list[str]) -> int:
        """Tokens the row needs: its longest pair, or its prompt plus the sampling room."""
        prompt_room = self.prompt_tokens(prompt) + self.max_new_tokens
        return max([prompt_room, *(self.pair_tokens(prompt, r) for r in responses)])

    def cut_prompt(self, prompt: str, responses: list[str]) -> str | None:
        """The prompt with its start cut so the row fits, or None when even an empty prompt cannot."""
        ids = self.tokenizer.encode(prompt, add_special_tokens=False)
        cut = self.need(prompt, responses) - self.max_len
        while cut < len(ids):
            # Special tokens kept and the end left as it was: a chat template's markup is
            # special tokens (ChatML's <|im_start|>assistant), which skipping cut away.
            shorter = self.tokenizer.decode(ids[cut:], skip_special_tokens=False).lstrip()
            excess = self.need(shorter, responses) - self.max_len if shorter else 1
            if shorter and excess <= 0:
                return shorter
            cut += max(1, excess)  # decoding can merge tokens differently: cut again
        return None

    def cut_turns(self, turns: list[dict[str, str]], responses: list[str]) -> list | None:
        """The conversation without as many of its earliest turns as the row needs to fit (a
        system turn kept, restarting at a user turn), or None when its last user turn cannot."""
        head = turns[:1] if turns and turns[0]["role"] == "system" else []
        rest = turns[len(head) :]
        for start in range(1, len(rest)):
            if rest[start]["role"] != "user":  # templates expect a user turn first
                continue
            try:
                text = render(head + rest[start:], self.tokenizer)
            except TemplateRefused:
                continue
            if self.need(text, responses) <= self.max_len:
                return head + rest[start:]
        return None

    def shorten(self, item):
        """The item cut to fit (whole turns of a conversation, else its prompt's start), or None."""
        if item.turns and (turns := self.cut_turns(item.turns, item.responses)) is not None:
            prompt = render(turns, self.tokenizer)
            return replace(item, prompt=prompt, turns=turns, readable_prompt=readable(turns))
        shorter = self.cut_prompt(item.prompt, item.responses)
        if shorter is None or not _keeps_question(shorter, item):
            return None
        return replace(item, prompt=shorter)

    def none_left(self, file: Path, rows: int, policy: str) -> Problem:
        """A table whose every row was too long, and so dropped, refused rather than run without
        it: its file had to be named, since an emptied demonstrations table had SFT train on
        the preferred answers as if there were none, and emptied preferences said only "no
        usable rows"."""
        room = max(0, self.max_len - self.max_new_tokens)
        message = (
            f"all {rows} rows are too long for the context of {self.max_len} tokens (a prompt"
            f" leaves {self.max_new_tokens} of them to sampling: {room} left for it), so"
            f" dataset.overlong {policy!r} left none: lower ppo.max_new_tokens and"
            " evaluation.max_new_tokens (the sampling room), or use a base model with a longer"
            " context"
        )
        return Problem(str(file), 0, "rows", message)

    def no_prompt_fits(self, items: list, folder: Path) -> Problem | None:
        """One problem for a dataset none of whose prompts leaves the sampling room in the
        context (a context no larger than the room, or every prompt long): under "refuse"
        each row was listed (hundreds), under a hint to drop rows, which leaves none."""
        if not items:
            return None
        shortest = min(self.prompt_tokens(item.prompt) for item in items)
        if shortest + self.max_new_tokens <= self.max_len:
            return None
        message = (
            f"no prompt fits the context of {self.max_len} tokens: each must leave"
            f" {self.max_new_tokens} of them to sampling, and the shortest prompt has"
            f" {shortest} tokens: {self._fixes(shortest)}"
        )
        return Problem(str(folder), 0, "rows", message)

    def _fixes(self, shortest: int) -> str:
        """What would let the shortest prompt fit, of the changes that can."""
        least = shortest + self.max_new_tokens
        fixes = [f"use a base model with a context of at least {least} tokens"]
        if shortest < self.max_len:  # else the prompt alone fills the context
            fixes.append(
                "lower ppo.max_new_tokens and evaluation.max_new_tokens (the response length)"
                f" to at most {self.max_len - shortest}"
            )
        if self.max_new_tokens < self.max_len:  # a prompt's start cut away leaves it room
            fixes.append("set dataset.overlong to 'truncate' in --params (cut prompts' start)")
        return ", or ".join(fixes)

    def apply(self, items: list, policy: str) -> tuple[list, dict[str, list[int]], list[Problem]]:
        """Items that fit (kept, cut or dropped per `policy`), the rows dropped and truncated,
        and problems under "refuse"."""
        kept, problems = [], []
        rows: dict[str, list[int]] = {"dropped": [], "truncated": []}
        for item in items:
            n = self.need(item.prompt, item.responses)
            if n <= self.max_len:
                kept.append(item)
                continue
            if policy == "refuse":
                response_tokens = [
                    len(encode_pair(self.tokenizer, "", r, 10**9)[0]) for r in item.responses
                ]
                where = (
                    item.response_field
                    if response_tokens and max(response_tokens) >= self.max_len
                    else item.prompt_field
                )
                message = f"row needs {n} tokens > context {self.max_len} (with {self.max_new_tokens} tokens of sampling room)"
                problems.append(Problem(item.file, item.row, where, message))
                continue
            shorter = self.shorten(item) if policy == "truncate" else None
            if shorter is None:
                rows["dropped"].append(item.row)
            else:
                rows["truncated"].append(item.row)
                kept.append(shorter)
        return kept, {what: numbers for what, numbers in rows.items() if numbers}, problems


def _keeps_question(cut: str, item) -> bool:
    """Whether a conversation's rendered prompt, cut from its start, keeps a word of its last
    user turn: a small room left only the chat template's markup after it
    ('<|im_start|>assistant'), the same prompt for every row (a trial: the judge's test split
    then held "1 prompt")."""
    if not item.turns:
        return True  # a text prompt's cut is its own end
    last = next((t["content"].strip() for t in reversed(item.turns) if t["role"] == "user"), "")
    at = item.prompt.rfind(last) if last else -1
    if at < 0:  # the template changed the turn's text: nothing to tell it by
        return True
    markup = len(item.prompt) - at - len(last)  # what the template puts after the turn
    return any(c.isalnum() for c in cut[: max(0, len(cut) - markup)])


def overlong_hint(problems: list[Problem], max_len: int, max_new_tokens: int) -> Problem | None:
    """One problem (row 0 of the first file) saying what to change when rows were refused
    for their length: the rows' own problems say only how long they are, and a dataset
    that does not fit a small model gives hundreds of them (own-data trial: 481 rows
    against a context of 40, with no word of the setting that drops or cuts them)."""
    if not problems:
        return None
    per_file = Counter(p.file for p in problems)
    # Row 0 of one file reads as that file's rows: with several files it counted all of them
    # against the first (a trial: "demonstrations.jsonl: 360 rows" of a 120-row table).
    where = (
        " (" + ", ".join(f"{Path(f).name} {n}" for f, n in sorted(per_file.items())) + ")"
        if len(per_file) > 1
        else ""
    )
    message = (
        f"{len(problems)} {'row' if len(problems) == 1 else 'rows'}{where}"
        f" {'does' if len(problems) == 1 else 'do'} not fit the context of {max_len} tokens (prompt and response, "
        f"the prompt with {max_new_tokens} tokens of sampling room): set dataset.overlong to "
        "'drop' or 'truncate' (cut the prompt's start) in --params to run without them, or "
        "lower ppo.max_new_tokens and evaluation.max_new_tokens (the sampling room)"
    )
    folder = os.path.commonpath(list(per_file)) if len(per_file) > 1 else min(per_file)
    return Problem(folder, 0, "rows", message)


def length_check(base_model: str, max_new_tokens: int) -> LengthCheck:
    """Tokenizer and context of a local base model, without loading its weights."""
    from transformers import AutoConfig, AutoTokenizer  # only where a dataset is checked

    from instructflow.models.lm import context_length

    tokenizer = AutoTokenizer.from_pretrained(base_model, local_files_only=True)
    config = AutoConfig.from_pretrained(base_model, local_files_only=True)
    return LengthCheck(tokenizer, context_length(SimpleNamespace(config=config)), max_new_tokens)
