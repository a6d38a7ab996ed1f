"""A prompt's split is drawn from its content before rendering: the same prompt given as
text in one table and as a conversation in another (rendered through a chat template)
lands on the same side of the split."""

import json

import pytest

from instructflow.models.tokenizer import train_tokenizer
from instructflow.tasks.conversations import prompt_key, split_key
from instructflow.tasks.dataset import DatasetConfig, load_dataset
from instructflow.tasks.dataset_layout import write_layout
from instructflow.tasks.lengths import LengthCheck
from instructflow.tasks.splits import hash_split
from instructflow.world import layout
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


def _same_prompts_as_text_and_as_conversations(tmp_path):
    """40 prompts as text in preferences and prompts, as conversations in demonstrations,
    read with a chat template (which renders the conversations to other text)."""
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
    return folder, LengthCheck(tok, max_len=512, max_new_tokens=8)


def test_a_prompt_is_on_one_side_whichever_table_and_form_it_comes_in(tmp_path):
    # given preferences and prompts giving 40 prompts as text, and demonstrations giving the
    # same prompts as conversations, which a chat template renders to other text
    folder, lengths = _same_prompts_as_text_and_as_conversations(tmp_path)
    preferences = [json.loads(line) for line in (folder / "preferences.jsonl").open()]
    # when the dataset is read (no user ids: split by prompt)
    data = load_dataset(folder, DatasetConfig(), lengths)
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


def test_a_prompts_identity_is_its_split_key_with_earlier_answers_kept():
    # given one prompt as text, as messages and as HH text: one prompt, as for the split
    user = [{"role": "user", "content": " Say  hi.\n"}]
    assert prompt_key("Say hi.") == prompt_key(user) == split_key(user) == "Say hi."
    assert prompt_key("\n\nHuman: Say hi.\n\nAssistant:") == "Say hi."
    system = [{"role": "system", "content": "Be brief."}, *user]
    assert prompt_key(system) == split_key(system)
    # and two conversations that differ only in an earlier answer: one split, two prompts
    first, second = (
        [
            {"role": "user", "content": "Say hi."},
            {"role": "assistant", "content": answer},
            {"role": "user", "content": "Again."},
        ]
        for answer in ("Hi.", "No.")
    )
    assert split_key(first) == split_key(second)
    assert prompt_key(first) == "Say hi.\n\n\nassistant: Hi.\n\nAgain."
    assert prompt_key(first) != prompt_key(second)


def test_a_prompt_has_one_id_whichever_table_and_form_it_comes_in(tmp_path):
    # given the same 40 prompts as text (preferences) and as conversations (demonstrations)
    folder, lengths = _same_prompts_as_text_and_as_conversations(tmp_path)
    data = load_dataset(folder, DatasetConfig(), lengths)
    assert data.demonstrations[0].prompt.startswith("<|user|>")  # rendered: other text
    # when the stage tables are written
    write_layout(data, tmp_path / "out")

    def ids(rel: str) -> set[str]:
        rows = (tmp_path / "out" / rel).read_text().splitlines()
        return {json.loads(r)["prompt_id"] for r in rows}

    # then SFT's rows (the conversations) and the RM's (the text) name each prompt by one id
    sft = ids(layout.SFT_TRAIN) | ids(layout.SFT_VALID)
    rm = ids(layout.RM_TRAIN) | ids(layout.RM_VALID)
    assert len(sft) > 20 and sft == rm


def test_a_row_repeated_as_text_and_as_a_conversation_is_a_repeat(tmp_path):
    # given demonstrations each given twice, under two user ids: once as prompt/response
    # text, once as a conversation (which the chat template renders to other text)
    folder, lengths = _same_prompts_as_text_and_as_conversations(tmp_path)
    for name in ("preferences", "prompts"):
        path = folder / f"{name}.jsonl"
        rows = [json.loads(line) | {"user_id": f"u{i}"} for i, line in enumerate(path.open())]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = folder / "demonstrations.jsonl"
    demos = [json.loads(line) for line in path.open()]
    twice = []
    for i, row in enumerate(demos):
        (user, answer) = row["messages"]
        text = {"prompt": user["content"], "response": answer["content"]}
        twice += [text | {"user_id": f"u{i}"}, row | {"user_id": f"x{i}"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in twice))
    # when it loads (split by user: the two copies may land in two splits)
    summary = load_dataset(folder, DatasetConfig(), lengths).summary
    assert summary["split_rule"] == "user_id"
    # then the held-out copies of training rows are found, whichever form each copy has
    leaks = [w for w in summary["split_warnings"] if w.startswith("demonstrations: ")]
    assert len(leaks) == 1 and "a training row word for word" in leaks[0], leaks
