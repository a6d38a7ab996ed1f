"""Small user datasets written by tests: HH-RLHF text pairs, K-wise rankings, prompt/chosen/rejected.

The content is a toy task a tiny model can see a difference in (the chosen
answer repeats the word asked for; the rejected one does not), so the data
are plausible, not random strings.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd

WORDS = "apple river stone cloud maple otter lemon ember tulip cedar amber frost".split()

# A chat template that refuses conversations, as Gemma's does a system turn and Llama 2's
# turns that do not alternate (with raise_exception, as the templates on the Hub do).
REFUSING_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _write(folder: Path, name: str, rows: list[dict], fmt: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        pd.DataFrame(rows).to_parquet(path)
    return path


def _task(rng: random.Random, i: int) -> tuple[str, str, str, str]:
    """(user_id, prompt, good answer, bad answer) of row i."""
    word = rng.choice(WORDS)
    prompt = f"Say the word {word} twice. ({i})"
    bad = rng.choice([w for w in WORDS if w != word])
    return f"user-{i % 40}", prompt, f"{word} {word}", f"{bad}"


def hh_text(turns: list[tuple[str, str]]) -> str:
    """HH-RLHF text: '\\n\\nHuman: ...\\n\\nAssistant: ...'."""
    return "".join(
        f"\n\n{'Human' if role == 'user' else 'Assistant'}: {text}" for role, text in turns
    )


def write_hh_dataset(folder: Path, n_pairs: int = 200, fmt: str = "jsonl", seed: int = 0) -> Path:
    """HH-style: pairwise conversations in HH text, plus prompts and demonstrations (with user ids)."""
    rng = random.Random(seed)
    prefs, prompts, demos = [], [], []
    for i in range(n_pairs):
        user, prompt, good, bad = _task(rng, i)
        turns = [("user", "Hello."), ("assistant", "Hi, how can I help?"), ("user", prompt)]
        if i % 2:
            turns = turns[2:]  # half single-turn, half multi-turn
        prefs.append(
            {
                "chosen": hh_text([*turns, ("assistant", good)]),
                "rejected": hh_text([*turns, ("assistant", bad)]),
                "user_id": user,
            }
        )
        prompts.append({"prompt": prompt, "user_id": user})
        demos.append(
            {
                "messages": [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": good},
                ],
                "user_id": user,
            }
        )
    _write(folder, "preferences", prefs, fmt)
    _write(folder, "prompts", prompts, fmt)
    _write(folder, "demonstrations", demos, fmt)
    return folder


def write_kwise_dataset(folder: Path, n: int = 120, fmt: str = "jsonl", seed: int = 0) -> Path:
    """K-wise rankings mixing K = 2 and K = 4 (best first), no user ids, no demonstrations."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        _, prompt, good, bad = _task(rng, i)
        responses = [good, bad] if i % 2 else [good, f"{good} {good}", bad, "I do not know."]
        order = list(range(len(responses)))
        rng.shuffle(order)  # responses in a random order; the ranking says which is best
        shuffled = [responses[j] for j in order]
        ranking = sorted(range(len(order)), key=lambda pos: order[pos])
        rows.append({"prompt": prompt, "responses": shuffled, "ranking": ranking})
    _write(folder, "preferences", rows, fmt)
    return folder


def write_pairwise_dataset(folder: Path, n: int = 120, fmt: str = "jsonl", seed: int = 0) -> Path:
    """Explicit prompt/chosen/rejected texts with scores (the Anthropic-HH-like pairwise form), plus prompts."""
    rng = random.Random(seed)
    rows, prompts = [], []
    for i in range(n):
        user, prompt, good, bad = _task(rng, i)
        rows.append(
            {
                "prompt": prompt,
                "chosen": good,
                "rejected": bad,
                "score_chosen": 8.0,
                "score_rejected": 3.5,
            }
        )
        prompts.append({"prompt": prompt})
    _write(folder, "preferences", rows, fmt)
    _write(folder, "prompts", prompts, fmt)
    return folder


def write_extras(folder: Path, fmt: str = "jsonl", n_docs: int = 60) -> Path:
    """A pretraining text table (PPO-ptx's mix) and a FLAN-style mixture beside a dataset."""
    docs = [
        {"text": f"The word {w} is a word. People say {w} often."}
        for w in WORDS * (n_docs // len(WORDS))
    ]
    flan = [{"prompt": f"Repeat twice: {w}", "response": f"{w} {w}"} for w in WORDS * 4]
    _write(folder, "pretrain", docs, fmt)
    _write(folder, "flan", flan, fmt)
    return folder


def dataset_run_result(summary: dict, evidence: str = "judge") -> dict:
    """The parts of a dataset run's result that report.md's Dataset section reads."""
    return {
        "dataset": summary,
        "skipped": {},
        "judge": {"kind": "rm", "training_pairs": 30, "accuracy_heldout_pairs": 0.7,
                  "trust_reason": "-"},
        "gate": {"evidence": evidence, "reason": "-"},
    }  # fmt: skip
