"""What people read of a prompt: a conversation's turns, never the chat template's markup.

A user's dataset of conversations, imported with a base model whose tokenizer
has a ChatML template: the model is prompted with the rendered text, while
the evaluation's rows and the labeling files `instructflow eval export`
writes show the turns as ``role: content`` blocks, and a file filled from
them imports.
"""

import csv
import json
import shutil
from pathlib import Path

import pytest

from instructflow.models.tokenizer import train_tokenizer
from instructflow.tasks.conversations import READABLE_PROMPTS, readable
from instructflow.tasks.dataset import DatasetConfig, load_dataset
from instructflow.tasks.dataset_layout import write_layout
from instructflow.tasks.evaluation import EvalConfig, Policy
from instructflow.tasks.human_eval import (
    blinded_items,
    human_results,
    write_labeling_files,
)
from instructflow.tasks.human_labels import read_labels
from instructflow.tasks.lengths import LengthCheck
from instructflow.tasks.own_evaluation import evaluate_own
from instructflow.tasks.tables import load_table, read_jsonl, write_jsonl
from instructflow.world import layout
from tests.own_data import write_hh_dataset, write_pairwise_dataset

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MARKUP = ("<|im_start|>", "<|im_end|>")
SYSTEM = {"role": "system", "content": "be nice"}


@pytest.fixture(scope="module")
def chatml():
    tok = train_tokenizer([f"Say the word {w} twice." for w in ("apple", "river")] * 5, 300)
    tok.chat_template = CHATML
    return LengthCheck(tok, max_len=512, max_new_tokens=8)


def _conversation_dataset(folder: Path) -> Path:
    """HH-style data whose preferences are message lists opening on a system turn, beside a
    prompts table of text: a test split holding both kinds of prompt."""
    write_hh_dataset(folder, n_pairs=120)
    path = folder / "preferences.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    out = []
    for n, row in enumerate(rows):
        prompt = f"name an animal ({n})"
        turns = [SYSTEM, {"role": "user", "content": prompt}]
        out.append(
            {
                "chosen": [*turns, {"role": "assistant", "content": "otter"}],
                "rejected": [*turns, {"role": "assistant", "content": "stone"}],
                "user_id": row["user_id"],
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in out))
    return folder


@pytest.fixture(scope="module")
def profile(tmp_path_factory, chatml):
    root = tmp_path_factory.mktemp("readable")
    data = load_dataset(_conversation_dataset(root / "data"), DatasetConfig(), chatml)
    write_layout(data, root / "profile")
    return root / "profile"


def test_readable_is_the_turns_as_role_content_blocks():
    turns = [SYSTEM, {"role": "user", "content": "name an animal"}]
    assert readable(turns) == "system: be nice\n\nuser: name an animal"


def test_the_model_gets_the_rendered_prompt_and_people_the_turns(profile):
    test = read_jsonl(profile / layout.EVAL_TEST)
    shown = {r["prompt_id"]: r["readable_prompt"] for r in read_jsonl(profile / READABLE_PROMPTS)}
    rendered = [r for r in test if r["prompt"].startswith("<|im_start|>")]
    texts = [r for r in test if not r["prompt"].startswith("<|im_start|>")]
    assert rendered and texts  # both kinds of prompt are in the test split
    for row in rendered:
        # the model's input is the template's text, as before
        assert row["prompt"].startswith("<|im_start|>system\nbe nice<|im_end|>\n<|im_start|>user\n")
        assert row["prompt"].endswith("<|im_start|>assistant\n")
        user = row["prompt"].split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
        # people's is the conversation's turns
        assert shown[row["prompt_id"]] == f"system: be nice\n\nuser: {user}"
    # a prompt given as text is read as it is: no row of its own
    assert set(shown) == {r["prompt_id"] for r in rendered}
    # and the test table still passes the pipeline's (strict) prompts schema
    load_table(profile / layout.EVAL_TEST, "prompts")


def test_a_dataset_of_text_prompts_writes_no_readable_table(tmp_path, chatml):
    data = load_dataset(write_pairwise_dataset(tmp_path / "pw", n=60), DatasetConfig(), chatml)
    written = write_layout(data, tmp_path / "out")
    assert READABLE_PROMPTS not in written
    assert not (tmp_path / "out" / READABLE_PROMPTS).exists()


def _small_profile(profile: Path, folder: Path) -> Path:
    """Two text prompts and two conversations of the test split (a tiny evaluation)."""
    test = read_jsonl(profile / layout.EVAL_TEST)
    templated = [r for r in test if r["prompt"].startswith("<|im_start|>")]
    plain = [r for r in test if not r["prompt"].startswith("<|im_start|>")]
    write_jsonl(folder / layout.EVAL_TEST, [*plain[:2], *templated[:2]])
    shutil.copy(profile / READABLE_PROMPTS, (folder / READABLE_PROMPTS))
    return folder


def _fill_csv(path: Path) -> None:
    rows = list(csv.DictReader(path.open(newline="")))
    for row in rows:
        row["rank"] = "1" if row["label"] == "A" else "2"
        row["likert"] = "6" if row["label"] == "A" else "3"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _fill_jsonl(path: Path) -> None:
    items = [json.loads(line) for line in path.read_text().splitlines()]
    for item in items:
        item["ranking"] = [r["label"] for r in item["responses"]]
        item["likert"] = {r["label"]: 4 for r in item["responses"]}
    path.write_text("".join(json.dumps(item) + "\n" for item in items))


def test_labeling_files_show_turns_and_import_back(profile, tiny_dirs, tmp_path):
    sft_dir, rm_dir = tiny_dirs
    small = _small_profile(profile, tmp_path / "profile")
    cfg = EvalConfig(max_prompts=4, max_new_tokens=4, samples_per_prompt=2, batch_size=8)
    policies = [Policy("sft", sft_dir), Policy("ppo", sft_dir)]
    rows, raw = evaluate_own(policies, sft_dir, rm_dir, small, cfg, seed=3)

    # the figures and the samples are those of the same prompts without the readable table:
    # the models' input is unchanged, the rows only carry what people read
    without = tmp_path / "without"
    shutil.copytree(small, without)
    (without / READABLE_PROMPTS).unlink()
    rows_without, raw_without = evaluate_own(policies, sft_dir, rm_dir, without, cfg, seed=3)
    assert rows == rows_without
    for policy, items in raw.items():
        assert [{k: v for k, v in r.items() if k != "readable_prompt"} for r in items] == (
            raw_without[policy]
        )
        assert all("readable_prompt" not in r for r in raw_without[policy])
        carried = [r for r in items if r["prompt"].startswith("<|im_start|>")]
        assert carried and all(r["readable_prompt"].startswith("system: ") for r in carried)

    # the labeling files: turns for a conversation, the text for a text prompt, no markup
    items, key = blinded_items(raw, n=4, seed=0)
    test = read_jsonl(small / layout.EVAL_TEST)
    shown = {r["prompt_id"]: r["readable_prompt"] for r in read_jsonl(small / READABLE_PROMPTS)}
    assert [item["prompt"] for item in items] == [
        shown.get(r["prompt_id"], r["prompt"]) for r in test
    ]
    assert sum(item["prompt"].startswith("system: be nice\n\nuser: ") for item in items) == 2
    paths = write_labeling_files(items, key, tmp_path / "human_eval")
    for name in ("jsonl", "csv"):
        text = paths[name].read_text()
        assert not any(mark in text for mark in MARKUP)
        assert "system: be nice" in text
    csv_prompts = {r["prompt"] for r in csv.DictReader(paths["csv"].open(newline=""))}
    assert csv_prompts == {item["prompt"] for item in items}

    # and a filled file of either kind imports: its prompts are the ones exported
    exported = json.loads(paths["exported"].read_text())
    _fill_csv(paths["csv"])
    labels = read_labels(paths["csv"], key, exported)
    assert set(labels) == set(key)
    assert all(entry["ranking"] == ["A", "B"] for entry in labels.values())
    assert set(human_results(labels, key)) == {"sft", "ppo"}
    _fill_jsonl(paths["jsonl"])
    assert set(read_labels(paths["jsonl"], key, exported)) == set(key)


def test_text_prompts_are_shown_as_they_are_and_any_rows_turns_count():
    rows = {
        policy: [
            {"prompt_id": "p0", "sample": 0, "prompt": "name an animal", "response": policy},
            {
                "prompt_id": "p1",
                "sample": 0,
                "prompt": "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
                "response": policy,
            }
            | ({"readable_prompt": "user: hi"} if policy != "champion v1" else {}),
        ]
        for policy in ("sft", "ppo", "champion v1")
    }
    items, _ = blinded_items(rows, n=2, seed=0)
    # the embedded world's prompts (text) are what they were; a champion sampled at export
    # without the turns does not bring the markup back
    assert [item["prompt"] for item in items] == ["name an animal", "user: hi"]
