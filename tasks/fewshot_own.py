"""base_fewshot's few-shot prompt on a user's dataset: which training demonstrations it shows.

The embedded world's prefix (tasks/evaluation.py `fewshot_rows`) shows the first
demonstration of each family whose answer has at most four words: its answers are short
by design. A user's answers are mostly longer, and a dataset without `category` is one
family, so that rule showed one demonstration or none, and base_fewshot, the paper's
few-shot baseline, was skipped on most real data. Here the shortest demonstration of each
family comes first (families in the order the table names them), then the next shortest of
any family, up to `evaluation.fewshot_examples`, and as many of those as leave every test
prompt room to sample in the base model's context are shown (shortest first, so a small
context drops the longest).
"""

from __future__ import annotations

from pathlib import Path

from instructflow.tasks.fewshot_shown import shortfall
from instructflow.tasks.lengths import LengthCheck
from instructflow.tasks.tables import read_jsonl
from instructflow.world import layout


def own_fewshot_rows(profile_dir: Path, n: int) -> list[dict]:
    """Up to `n` training demonstrations: each family's shortest answer first, then the
    shortest others (by words; ties in table order), each prompt once."""
    rows, seen = [], set()
    for row in read_jsonl(profile_dir / layout.SFT_TRAIN):
        if row["prompt"] not in seen:
            seen.add(row["prompt"])
            rows.append(row)
    by_length = sorted(rows, key=lambda r: len(r["response"].split()))  # stable: table order
    shortest: dict[str, dict] = {}
    for row in by_length:
        shortest.setdefault(row["family"], row)
    # families in the order the table names them (dicts keep insertion order)
    families = dict.fromkeys(row["family"] for row in rows)
    leaders = [shortest[family] for family in families]
    chosen = {id(row) for row in leaders}
    return (leaders + [r for r in by_length if id(r) not in chosen])[:n]


def fewshot_prefix_that_fits(profile_dir: Path, n: int, check: LengthCheck) -> tuple[str, int]:
    """base_fewshot's prefix with as many of its `n` demonstrations as leave every test prompt
    behind it `check.max_new_tokens` of room in the context, and how many it shows ("", 0 when
    not one does; fewer than `n` also when the training split holds fewer: `fewshot_shortfall`).
    A dataset's rows are checked against the context, but not behind this prefix: a 128-token
    GPT-2's evaluation failed on it after every stage had trained."""
    from instructflow.tasks.evaluation import fewshot_text  # the stages' models

    rows = own_fewshot_rows(profile_dir, n)
    prompts = [row["prompt"] for row in read_jsonl(profile_dir / layout.EVAL_TEST)]
    for k in range(len(rows), 0, -1):
        prefix = fewshot_text(rows[:k], check.tokenizer)
        longest = max(check.prompt_tokens_after(prefix, p) for p in prompts)
        if longest + check.max_new_tokens <= check.max_len:
            return prefix, k
    return "", 0


# The dataset's rows fit the context, but not necessarily behind base_fewshot's examples.
FEWSHOT_CUT = (
    "more leave a test prompt no room to sample in the base model's context of {context} tokens"
)
NO_FEWSHOT_ROOM = (
    "skipped: not one demonstration leaves a test prompt room to sample in the base model's"
    " context of {context} tokens (a few-shot prompt of the base model)"
)
FEWSHOT_FEW = "the training split holds only {held}"
NO_DEMOS = "skipped: the training split holds no demonstration to show"
NO_FEWSHOT_ASKED = "skipped: evaluation.fewshot_examples is 0"


def fewshot_shortfall(
    profile_dir: Path, n: int, shown: int, context: int
) -> tuple[dict | None, str | None]:
    """(the report's `fewshot_shortfall` block, skip reason) when base_fewshot shows `shown` <
    `n` demonstrations: the context's room (`fewshot_prefix_that_fits`), or too few in the
    training split; (None, None) when it shows all `n`."""
    if shown >= n:
        return (None, None) if n else (None, NO_FEWSHOT_ASKED)
    if shown < len(own_fewshot_rows(profile_dir, n)):  # the context left room for fewer
        if shown:
            return shortfall(shown, n, FEWSHOT_CUT.format(context=context)), None
        return None, NO_FEWSHOT_ROOM.format(context=context)
    if shown:
        held = "1 prompt with a demonstration" if shown == 1 else f"{shown} prompts with one"
        return shortfall(shown, n, FEWSHOT_FEW.format(held=held)), None
    return None, NO_DEMOS
