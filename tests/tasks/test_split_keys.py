"""A prompt's split is drawn from its content before rendering: the same prompt given as
text in one table and as a conversation in another (rendered through a chat template)
lands on the same side of the split."""

import json

import pytest

from instructflow.models.tokenizer import train_tokenizer
from instructflow.tasks.conversations import split_key
from instructflow.tasks.dataset import DatasetConfig, load_dataset
from instructflow.tasks.lengths import LengthCheck
from instructflow.tasks.splits import hash_split
from tests.own_data import write_pairwise_dataset

TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_a_prompt_has_one_key_as_text_as_messages_and_as_hh_text():
    user = [{"role": "user", "content": " Say  hi.\n"}]
    assert split_key("Say hi.") == split_key(user) == "Say hi."
    assert split_key("\n\nHuman: Say hi.\n\nAssistant:") == "Say hi."
    # system and user turns count, in order; assistant turns do not
    turns = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hi."},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "Again."},
    ]
    assert split_key(turns) == "Be brief.\n\nSay hi.\n\nAgain."
    # a text's own line breaks are whitespace: no text has a multi-turn key
    assert split_key("Be brief.\n\nSay hi.") == "Be brief. Say hi."


@pytest.mark.parametrize(
    ("prompt", "key", "split"),
    [
        # u = int(sha256(key)[:15], 16) / 16**15; test below 0.1, valid below 0.1 + 0.2
        (" Sort:  b a c\n", "Sort: b a c", "valid"),  # sha256 1b5e9df0824af75..., u = 0.1069
        (
            [{"role": "user", "content": "Count the words: a b c"}],
            "Count the words: a b c",
            "test",  # sha256 072e30ce5da6627..., u = 0.0280
        ),
        (
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}],
            "Be brief.\n\nSay hi.",
            "train",  # sha256 50607d11f386960..., u = 0.3140
        ),
        ("\n\nHuman: Say hi.\n\nAssistant:", "Say hi.", "train"),  # e276e57b8ac9f38..., 0.8846
    ],
)
def test_hand_checked_splits(prompt, key, split):
    assert split_key(prompt) == key
    assert hash_split(key, valid_fraction=0.2, test_fraction=0.1) == split


def test_a_prompt_is_on_one_side_whichever_table_and_form_it_comes_in(tmp_path):
    # given preferences and prompts giving 40 prompts as text, and demonstrations giving the
    # same prompts as conversations, which a chat template renders to other text
    folder = write_pairwise_dataset(tmp_path / "pw", n=40)
    preferences = [json.loads(line) for line in (folder / "preferences.jsonl").open()]
    demos = [
        {
            "messages": [
                {"role": "user", "content": row["prompt"]},
                {"role": "assistant", "content": row["chosen"]},
            ]
        }
        for row in preferences
    ]
    (folder / "demonstrations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in demos))
    tok = train_tokenizer([row["prompt"] for row in preferences], vocab_size=300)
    tok.chat_template = TEMPLATE
    # when the dataset is read (no user ids: split by prompt)
    data = load_dataset(
        tmp_path / "pw", DatasetConfig(), LengthCheck(tok, max_len=512, max_new_tokens=8)
    )
    assert data.summary["split_rule"] == "prompt_hash"
    assert data.demonstrations[0].prompt.startswith("<|user|>")  # rendered: other text
    # then each prompt is in one split in all three tables
    sides: dict[str, set[str]] = {}
    for items in (data.preferences, data.prompts, data.demonstrations):
        for item in items:
            prompt = preferences[item.row - 1]["prompt"]
            sides.setdefault(prompt, set()).add(data.split_of[id(item)])
    assert len(sides) == 40
    assert all(len(split) == 1 for split in sides.values()), sides
    # and there is more than one side to be on
    assert len(set().union(*sides.values())) == 3
