"""Human evaluation round trip: a blinded labeling file out, people's rankings back in.

Export: per test prompt, one sample of every policy, shuffled and labelled
A, B, C...; the policy names are kept in a separate key file that labelers
never see. Both JSONL (one item a line) and CSV (one response a row, with
empty `rank` and `likert` columns to fill) are written. The prompt people
read is the conversation's turns (`readable_prompt`) when the evaluation's row
has them, never a chat template's markup; else the prompt the policies got.

Import: the filled file is read back and checked (instructflow.tasks.human_labels),
joined with the key, and turned into per-policy win rates against a baseline
(SFT), with a 95% bootstrap interval over prompts, and Likert means.
"""

import csv
import hashlib
import json
import random
from pathlib import Path

from instructflow.tasks.spreadsheet_cells import spreadsheet_text
from instructflow.tasks.stats import mean_with_ci

LIKERT = range(1, 8)
EMPTY_RESPONSE = "[no response: the model wrote nothing]"
"""What labelers see for an empty response: a blank cell reads as a broken export."""
CSV_FIELDS = ["item_id", "prompt", "label", "response", "rank", "likert"]


def blinded_items(
    responses: dict[str, list[dict]], n: int, seed: int
) -> tuple[list[dict], dict[str, dict[str, str]]]:
    """Items to label and the key {item_id: {label: policy}}.

    `responses` maps a policy to its evaluation rows (prompt_id, sample, prompt,
    response, and readable_prompt where the prompt was a conversation); the first
    sample of the first `n` prompts is used. An item's prompt is `shown_prompt`'s; an empty
    response is shown as EMPTY_RESPONSE.
    """
    first = {
        policy: {row["prompt_id"]: row for row in rows if row["sample"] == 0}
        for policy, rows in responses.items()
    }
    prompt_ids = [
        pid for pid in next(iter(first.values())) if all(pid in r for r in first.values())
    ]
    rng = random.Random(seed)
    items, key = [], {}
    for index, pid in enumerate(prompt_ids[:n]):
        policies = sorted(first)
        rng.shuffle(policies)
        item_id = f"item-{index:04d}"
        labels = [chr(ord("A") + i) for i in range(len(policies))]
        key[item_id] = dict(zip(labels, policies, strict=True))
        items.append(
            {
                "item_id": item_id,
                "prompt": shown_prompt([first[policy][pid] for policy in sorted(first)]),
                "responses": [
                    {"label": label, "text": first[policy][pid]["response"] or EMPTY_RESPONSE}
                    for label, policy in zip(labels, policies, strict=True)
                ],
                "ranking": [],
                "likert": {},
            }
        )
    return items, key


def shown_prompt(rows: list[dict]) -> str:
    """The prompt people read of the rows of one prompt (a policy's each): the conversation's
    turns where a row has them (any policy's row: the rows of one prompt agree), else the text
    the policies were given (the embedded world's, a dataset's text prompts)."""
    readable = [row["readable_prompt"] for row in rows if row.get("readable_prompt")]
    return readable[0] if readable else rows[0]["prompt"]


def text_digest(prompt: str, response: str) -> str:
    """What the import checks a row's texts by. Line ends count as one: a spreadsheet saves
    the blank lines between a conversation's turns as CRLF."""
    text = f"{prompt}\0{response}".replace("\r\n", "\n")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_labeling_files(items: list[dict], key: dict, folder: Path) -> dict[str, Path]:
    """labeling.jsonl and labeling.csv for labelers; key.json for whoever imports, and
    exported.json: a digest of each response as exported, so that a file filled from
    another export (the item ids and labels repeat) or another run is refused on import."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "jsonl": folder / "labeling.jsonl",
        "csv": folder / "labeling.csv",
        "key": folder / "key.json",
        "exported": folder / "exported.json",
    }
    exported = {
        item["item_id"]: {
            r["label"]: text_digest(item["prompt"], r["text"]) for r in item["responses"]
        }
        for item in items
    }
    paths["exported"].write_text(json.dumps(exported, indent=1))
    paths["jsonl"].write_text("".join(json.dumps(item) + "\n" for item in items))
    with paths["csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for item in items:
            for response in item["responses"]:
                writer.writerow(
                    {
                        "item_id": item["item_id"],
                        "prompt": spreadsheet_text(item["prompt"]),
                        "label": response["label"],
                        "response": spreadsheet_text(response["text"]),
                        "rank": "",
                        "likert": "",
                    }
                )
    paths["key"].write_text(json.dumps(key, indent=2))
    return paths


def pairwise_wins(
    labels: dict[str, dict], key: dict[str, dict[str, str]], policy: str, rival: str
) -> list[float]:
    """Per item: 1 if people ranked `policy` above `rival`, else 0 (items with both)."""
    wins = []
    for item, entry in sorted(labels.items()):
        position = {key[item][label]: i for i, label in enumerate(entry["ranking"])}
        if policy in position and rival in position:
            wins.append(float(position[policy] < position[rival]))
    return wins


def human_results(
    labels: dict[str, dict], key: dict[str, dict[str, str]], baseline: str = "sft", seed: int = 0
) -> dict[str, dict]:
    """Per policy: win rate against `baseline` (mean, 95% CI over prompts) and Likert mean."""
    policies = sorted({p for item in key.values() for p in item.values()})
    out = {}
    for policy in policies:
        scores = [
            entry["likert"][label]
            for item, entry in sorted(labels.items())
            for label, name in key[item].items()
            if name == policy and label in entry["likert"]
        ]
        row = {"likert": {"mean": sum(scores) / len(scores) if scores else None}}
        if policy != baseline:
            row["win_rate_vs_sft"] = mean_with_ci(
                pairwise_wins(labels, key, policy, baseline), seed
            )
        out[policy] = row
    return out
