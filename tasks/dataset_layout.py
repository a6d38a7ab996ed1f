"""Write a normalised user dataset in the layout the stages read (instructflow.world.layout), in the pipeline's schemas.

- sft/{train,valid}.jsonl: demonstrations of train/valid rows, or, without a
  demonstrations table, the preferred response of each train/valid preference;
- ppo/{train,valid}.jsonl: the prompts table's prompts (else the preferences');
- rm/{train,valid}.jsonl: the preferences' prompts (what the RM was trained on);
- eval/test.jsonl: every test-split prompt of prompts and preferences;
- eval/test_readable.jsonl: of those, each prompt that was a conversation as
  people read it (its turns, without chat-template markup), by prompt_id:
  what `instructflow eval export` shows labelers (absent when none was);
- comparisons/{train,valid,heldout}.jsonl: the preferences as K-wise
  comparisons, heldout = the test split (for the held-out judge, never the RM);
- pretrain/{train,valid}.jsonl (valid: the documents whose `split` is valid or test,
  else every 10th) and baselines/{flan,t0}.jsonl when given;
- manifest.json: the import summary.
Ids are derived from the content (a prompt's id is a hash of its prompt_key: its
turns before rendering, so one prompt given as text in one table and as a
conversation in another has one id, as it has one split), and the same dataset
always writes the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from instructflow.tasks.conversations import READABLE_PROMPTS
from instructflow.tasks.dataset import Dataset
from instructflow.tasks.dataset_items import Item
from instructflow.tasks.split_sizes import held_out_document
from instructflow.tasks.splits import ANONYMOUS_USER
from instructflow.tasks.tables import write_jsonl
from instructflow.world import layout

COMPARISONS = {"train": "comparisons/train.jsonl", "valid": "comparisons/valid.jsonl"}
HELDOUT = "comparisons/heldout.jsonl"
DEFAULT_FAMILY = "default"
UNKNOWN_LABELER = "unknown"


def prompt_id(key: str) -> str:
    """The id of the prompt whose conversations.prompt_key is `key`."""
    return "p-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


def _prompt_row(item: Item, split: str) -> dict:
    # By key, not by the rendered text: a chat template renders a conversation to other
    # text than the same prompt given as text, and that is still one prompt.
    pid = prompt_id(item.prompt_key)
    return {
        "prompt_id": pid,
        "user_id": item.user_id or f"{ANONYMOUS_USER}{pid[2:]}",
        "split": split,
        "family": item.category or DEFAULT_FAMILY,
        "prompt": item.prompt,
    }


def _unique_prompts(rows: list[dict]) -> list[dict]:
    """One row per prompt (the first), as the prompts schema's unique prompt_id wants."""
    seen: dict[str, dict] = {}
    for row in rows:
        seen.setdefault(row["prompt_id"], row)
    return list(seen.values())


def _unique_ids(rows: list[dict]) -> list[dict]:
    """Suffix repeated prompt ids (two demonstrations of one prompt) so each row's id is unique."""
    count: dict[str, int] = {}
    out = []
    for row in rows:
        n = count[row["prompt_id"]] = count.get(row["prompt_id"], 0) + 1
        out.append(row | {"prompt_id": f"{row['prompt_id']}-{n}"} if n > 1 else row)
    return out


def _demo_row(item: Item, split: str, response: str) -> dict:
    return _prompt_row(item, split) | {
        "response": response,
        "labeler_id": item.labeler_id or UNKNOWN_LABELER,
    }


def _comparison_row(item: Item, split: str) -> dict:
    row = _prompt_row(item, split)
    del row["family"]
    return row | {
        "comparison_id": f"{Path(item.file).stem}-{item.row}",
        "responses": item.responses,
        "ranking": item.ranking,
        "labeler_id": item.labeler_id or UNKNOWN_LABELER,
    }


def _readable_rows(items: list[Item]) -> list[dict]:
    """{prompt_id, readable_prompt} of the items whose prompt was a conversation, one row
    per prompt id (the first, as eval/test.jsonl keeps the first row of a prompt)."""
    seen: dict[str, dict] = {}
    for item in items:
        pid = prompt_id(item.prompt_key)
        if pid not in seen:
            seen[pid] = {"prompt_id": pid, "readable_prompt": item.readable_prompt}
    return [row for row in seen.values() if row["readable_prompt"] is not None]


def write_layout(dataset: Dataset, folder: Path) -> dict[str, int]:
    """Write the stage tables under `folder`; returns rows written per file."""
    split = dataset.split_of

    def in_split(items: list[Item], name: str) -> list[Item]:
        return [i for i in items if split[id(i)] == name]

    tables: dict[str, list[dict]] = {}
    for name, rel in (("train", layout.SFT_TRAIN), ("valid", layout.SFT_VALID)):
        if dataset.demonstrations:
            demos = [
                _demo_row(i, name, i.responses[0]) for i in in_split(dataset.demonstrations, name)
            ]
        else:
            chosen = in_split(dataset.preferences, name)
            demos = [_demo_row(i, name, i.responses[i.ranking[0]]) for i in chosen]
        tables[rel] = _unique_ids(demos)
    ppo_source = dataset.prompts or dataset.preferences
    for name, ppo_rel, rm_rel in (
        ("train", layout.PPO_TRAIN, layout.RM_TRAIN),
        ("valid", layout.PPO_VALID, layout.RM_VALID),
    ):
        tables[ppo_rel] = _unique_prompts(
            [_prompt_row(i, name) for i in in_split(ppo_source, name)]
        )
        tables[rm_rel] = _unique_prompts(
            [_prompt_row(i, name) for i in in_split(dataset.preferences, name)]
        )
    test = in_split(dataset.prompts, "test") + in_split(dataset.preferences, "test")
    tables[layout.EVAL_TEST] = _unique_prompts([_prompt_row(i, "test") for i in test])
    readable = _readable_rows(test)
    if readable:  # a dataset of text prompts writes the tables it always wrote
        tables[READABLE_PROMPTS] = readable
    for name, rel in (*COMPARISONS.items(), ("test", HELDOUT)):
        tables[rel] = [_comparison_row(i, name) for i in in_split(dataset.preferences, name)]
    if "pretrain" in dataset.extra:
        rows = dataset.extra["pretrain"]
        docs = [{"doc_id": f"doc-{n}", "text": r["text"]} for n, r in enumerate(rows)]
        held_out = [held_out_document(n, r) for n, r in enumerate(rows)]
        tables[layout.PRETRAIN_TRAIN] = [
            d for d, out in zip(docs, held_out, strict=True) if not out
        ]
        tables[layout.PRETRAIN_VALID] = [d for d, out in zip(docs, held_out, strict=True) if out]
    for name, rel in (("flan", layout.FLAN_MIXTURE), ("t0", layout.T0_MIXTURE)):
        if name in dataset.extra:
            tables[rel] = [
                {
                    "example_id": f"{name}-{n}",
                    "family": DEFAULT_FAMILY,
                    "prompt": r["prompt"],
                    "response": r["response"],
                }
                for n, r in enumerate(dataset.extra[name])
            ]
    for rel, rows in tables.items():
        write_jsonl(folder / rel, rows)
    (folder / layout.MANIFEST).write_text(
        json.dumps({"dataset": dataset.summary}, sort_keys=True, indent=2) + "\n", encoding="utf-8"
    )
    return {rel: len(rows) for rel, rows in tables.items()}
