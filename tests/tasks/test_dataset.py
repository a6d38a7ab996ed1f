"""A user's dataset directory: shapes recognised, normalised to K-wise comparisons, split, validated."""

import json
from pathlib import Path

import pandas as pd
import pytest

from instructflow.models.tokenizer import train_tokenizer
from instructflow.tasks.conversations import parse_hh, render
from instructflow.tasks.dataset import DatasetConfig, load_dataset
from instructflow.tasks.dataset_layout import HELDOUT, write_layout
from instructflow.tasks.lengths import LengthCheck
from instructflow.tasks.splits import hash_split
from instructflow.tasks.tables import TableError, load_table
from instructflow.world import layout
from tests.own_data import (
    REFUSING_TEMPLATE,
    hh_text,
    write_hh_dataset,
    write_kwise_dataset,
    write_pairwise_dataset,
)


@pytest.fixture(scope="module")
def tokenizer():
    texts = [f"Say the word {w} twice." for w in "apple river stone cloud".split()] * 5
    return train_tokenizer(texts, vocab_size=300)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _problems(error: TableError) -> list[tuple[str, int, str]]:
    return [(Path(p.file).name, p.row, p.field) for p in error.problems]


# ---------------------------------------------------------------- conversations


def test_hh_text_parses_into_turns_and_the_prompt_is_what_both_sides_share():
    text = "\n\nHuman: Hi.\n\nAssistant: Hello!\n\nHuman: Name a fruit.\n\nAssistant: Apple."
    assert parse_hh(text) == [
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Name a fruit."},
        {"role": "assistant", "content": "Apple."},
    ]
    assert parse_hh("Human: no leading blank line") is None
    # plain rendering: one user turn is its own text; more turns keep their roles
    assert render([{"role": "user", "content": "Name a fruit."}]) == "Name a fruit."
    assert render(parse_hh(text)[:3]) == "Human: Hi.\n\nAssistant: Hello!\n\nHuman: Name a fruit."


def test_a_chat_template_renders_the_prompt_turns():
    tok = train_tokenizer(["a b c"], vocab_size=270)
    tok.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    messages = [{"role": "user", "content": "Name a fruit."}]
    assert render(messages, tok) == "<|user|>Name a fruit.\n<|assistant|>"


def test_conversations_the_chat_template_refuses_are_named_with_its_message(tmp_path):
    # given a base model whose chat template refuses a system turn and turns that do not alternate
    tok = train_tokenizer(["Say the word apple twice."] * 5, vocab_size=300)
    tok.chat_template = REFUSING_TEMPLATE
    folder = write_hh_dataset(tmp_path / "hh", n_pairs=40)
    system = [{"role": "system", "content": "Be brief."}]
    rows = _lines(folder / "demonstrations.jsonl")
    _rewrite(folder / "demonstrations.jsonl", 3, messages=system + rows[2]["messages"])
    two_users = [("user", "Hello."), ("user", "Say apple twice.")]
    _rewrite(
        folder / "preferences.jsonl",
        2,
        chosen=hh_text([*two_users, ("assistant", "apple apple")]),
        rejected=hh_text([*two_users, ("assistant", "no")]),
    )
    # when the dataset is read with that model's tokenizer, as a run reads it
    with pytest.raises(TableError) as e:
        load_dataset(folder, DatasetConfig(), LengthCheck(tok, max_len=512, max_new_tokens=8))
    # then each of those rows is named, with the template's own message, and no other row
    assert sorted(_problems(e.value)) == [
        ("demonstrations.jsonl", 3, "messages"),
        ("preferences.jsonl", 2, "chosen"),
    ]
    refuses = "the base model's chat template refuses this conversation"
    assert f"{refuses}: System role not supported" in str(e.value)
    assert f"{refuses}: Conversation roles must alternate user/assistant/" in str(e.value)


# ---------------------------------------------------------------- the three shapes


def test_hh_conversations_become_pairs_whose_prompt_is_the_shared_turns(tmp_path):
    folder = write_hh_dataset(tmp_path / "hh", n_pairs=200)
    # one more row whose sides diverge before the last turn: no shared prompt, counted
    extra = {
        "chosen": hh_text([("user", "A?"), ("assistant", "x"), ("user", "B?"), ("assistant", "y")]),
        "rejected": hh_text([("user", "C?"), ("assistant", "z")]),
        "user_id": "user-1",
    }
    with (folder / "preferences.jsonl").open("a") as f:
        f.write(json.dumps(extra) + "\n")

    data = load_dataset(folder)

    assert data.summary["preference_shape"] == "conversation"
    assert data.summary["no_shared_prefix"] == 1
    assert data.summary["no_shared_prefix_rows"] == [201]  # the row appended after 200
    assert data.summary["k_counts"] == {2: 200}
    assert data.summary["sft_source"] == "demonstrations"
    first = data.preferences[0]  # row 1: a three-turn prompt (i = 0 is even)
    assert first.prompt.startswith("Human: Hello.\n\nAssistant: Hi, how can I help?\n\nHuman: Say")
    assert first.ranking == [0, 1] and first.responses[0] == first.responses[0].strip()
    assert data.preferences[1].prompt.startswith("Say the word")  # single turn: the text itself


def test_kwise_rankings_mixing_k2_and_k4_from_parquet_keep_their_order(tmp_path):
    folder = write_kwise_dataset(tmp_path / "kw", n=40, fmt="parquet")

    data = load_dataset(folder)
    write_layout(data, tmp_path / "out")

    assert data.summary["preference_shape"] == "ranking"
    assert data.summary["k_counts"] == {2: 20, 4: 20}
    assert data.summary["split_rule"] == "prompt_hash"
    assert data.summary["sft_source"].startswith("preferred responses")
    rows = [
        r
        for rel in ("comparisons/train.jsonl", "comparisons/valid.jsonl", HELDOUT)
        for r in _lines(tmp_path / "out" / rel)
    ]
    assert len(rows) == 40
    for row in rows:  # the writer ranks the doubled word first
        best = row["responses"][row["ranking"][0]]
        assert best.split()[0] == best.split()[1] and len(best.split()) == 2
    # SFT trains on the preferred response when there are no demonstrations
    sft = _lines(tmp_path / "out" / layout.SFT_TRAIN)
    assert all(len(set(r["response"].split())) == 1 for r in sft)


def test_explicit_pairs_keep_their_scores_as_metadata(tmp_path):
    data = load_dataset(write_pairwise_dataset(tmp_path / "pw", n=30))
    assert data.summary["preference_shape"] == "pairwise"
    assert data.preferences[0].meta == {"score_chosen": 8.0, "score_rejected": 3.5}
    assert data.preferences[0].responses == [
        data.preferences[0].responses[0],
        data.preferences[0].responses[1],
    ]


def test_the_written_layout_passes_the_pipeline_schemas(tmp_path):
    data = load_dataset(write_hh_dataset(tmp_path / "hh", n_pairs=200))
    counts = write_layout(data, tmp_path / "out")
    out = tmp_path / "out"
    for rel in (layout.SFT_TRAIN, layout.SFT_VALID):
        load_table(out / rel, "demonstrations")
    for rel in (layout.PPO_TRAIN, layout.PPO_VALID, layout.EVAL_TEST, layout.RM_TRAIN):
        load_table(out / rel, "prompts")
    for rel in ("comparisons/train.jsonl", "comparisons/valid.jsonl", HELDOUT):
        load_table(out / rel, "comparisons", k_range=(2, 9))
    assert (
        counts["comparisons/train.jsonl"] + counts["comparisons/valid.jsonl"] + counts[HELDOUT]
        == 200
    )
    # by user: no user's rows in two splits, across every table written
    split_of_user: dict[str, set] = {}
    for rel in counts:
        for row in _lines(out / rel):
            if "user_id" in row:
                split_of_user.setdefault(row["user_id"], set()).add(row["split"])
    assert all(len(s) == 1 for s in split_of_user.values())


# ---------------------------------------------------------------- splits


def test_hash_split_is_stable_and_follows_the_fractions():
    keys = [f"prompt {i}" for i in range(4000)]
    first = [hash_split(k, 0.1, 0.2) for k in keys]
    assert first == [hash_split(k, 0.1, 0.2) for k in keys]
    share = {s: first.count(s) / len(keys) for s in ("train", "valid", "test")}
    # binomial s.d. at n = 4000 is <= 0.008: these bounds are ~4 s.d.
    assert abs(share["test"] - 0.2) < 0.03 and abs(share["valid"] - 0.1) < 0.03


def test_one_prompt_lands_in_one_split_whatever_table_holds_it(tmp_path):
    data = load_dataset(write_pairwise_dataset(tmp_path / "pw", n=60))
    by_text: dict[str, set] = {}
    for item in data.prompts + data.preferences:
        by_text.setdefault(item.prompt, set()).add(data.split_of[id(item)])
    assert all(len(s) == 1 for s in by_text.values())
    assert data.summary["split_counts"]["prompts"] == data.summary["split_counts"]["preferences"]


# ---------------------------------------------------------------- refused before training


def _rewrite(path: Path, row: int, **changes) -> None:
    rows = _lines(path)
    rows[row - 1] |= changes
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_user_in_two_splits_is_refused_naming_both_places(tmp_path):
    folder = write_hh_dataset(tmp_path / "hh", n_pairs=60)
    _rewrite(folder / "prompts.jsonl", 1, split="train")  # user-0
    _rewrite(folder / "preferences.jsonl", 41, split="test")  # user-0 again (i = 40)
    with pytest.raises(TableError) as e:
        load_dataset(folder)
    found = _problems(e.value)
    assert len(found) == 1
    assert found[0][1:] == (41, "user_id") or found[0][1:] == (1, "user_id")
    assert "user 'user-0'" in str(e.value) and "split 'train'" in str(e.value)


def test_a_split_a_stage_reads_left_empty_is_refused_naming_table_and_split(tmp_path):
    # given a dataset whose settings leave the validation split empty
    folder = write_pairwise_dataset(tmp_path / "pw", n=60)
    with pytest.raises(TableError) as e:
        load_dataset(folder, DatasetConfig(valid_fraction=0.0))
    # then it is refused before any stage: the RM's and PPO's tables, each once
    assert sorted(_problems(e.value)) == [
        ("preferences.jsonl", 0, "split"),
        ("prompts.jsonl", 0, "split"),
    ]
    assert "no rows in the valid split (train " in str(e.value)
    assert "needed by the reward model's validation" in str(e.value)
    assert "needed by PPO's checkpoint selection" in str(e.value)


def test_a_row_without_a_user_id_among_rows_with_one_is_refused_not_resplit(tmp_path):
    # given an HH dataset whose preferences all carry a user id but rows 7 and 9
    folder = write_hh_dataset(tmp_path / "hh", n_pairs=60)
    _rewrite(folder / "preferences.jsonl", 7, user_id=None)
    rows = _lines(folder / "preferences.jsonl")
    del rows[8]["user_id"]
    (folder / "preferences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # then both rows are named (the whole dataset was split by prompt instead, silently)
    with pytest.raises(TableError) as e:
        load_dataset(folder, DatasetConfig())
    assert _problems(e.value) == [
        ("preferences.jsonl", 7, "user_id"),
        ("preferences.jsonl", 9, "user_id"),
    ]
    assert "missing while 58 other rows of this table have one" in str(e.value)


def test_a_split_far_thinner_than_asked_is_warned_about():
    from instructflow.tasks.split_sizes import thin_splits

    # 60 users, 20% asked for test: 3 users (17 of 300 rows) landed there, 31 in valid
    counts = {"preferences": {"train": 252, "valid": 31, "test": 17}}
    (warning,) = thin_splits(counts, valid_fraction=0.1, test_fraction=0.2)
    assert warning.startswith("preferences: the test split got 17 of 300 rows (6%, asked 20%)")
    # at half the asked share or more, or with no rows at all (refused elsewhere): nothing
    assert thin_splits({"prompts": {"train": 70, "valid": 5, "test": 25}}, 0.1, 0.2) == []
    assert thin_splits({"prompts": {"train": 90, "valid": 10}}, 0.1, 0.2) == []


def test_rows_repeated_across_splits_are_warned_about_by_count():
    from instructflow.tasks.splits import repeated_rows

    # given rows A (train and test), B (twice in train), C (test only), rows 1-5 of one file
    f = "/data/p.jsonl"
    rows = [(("q1", "a", "b"), "train", f, 1), (("q1", "a", "b"), "test", f, 2)]
    rows += [(("q2", "c", "d"), "train", f, 3), (("q2", "c", "d"), "train", f, 4)]
    rows += [(("q3", "e", "f"), "test", f, 5)]
    (warning,) = repeated_rows({"preferences": rows})
    # then the one test row that is a training row is counted against the 2 held-out rows
    assert warning.startswith(
        "preferences: 1 of 2 validation and test rows repeats a training row word for word "
        "(p.jsonl row 2)"
    )
    # and repeats within one split only are counted as repeats, named by file and row
    assert repeated_rows({"demonstrations": rows[2:]}) == [
        "demonstrations: 1 row repeats an earlier row word for word (p.jsonl row 4)"
    ]
    assert repeated_rows({"preferences": rows[2:3] + rows[4:]}) == []


def test_a_dataset_listing_each_row_under_two_users_warns_that_test_rows_are_not_held_out(
    tmp_path,
):
    # given pairwise rows, each listed twice under two user ids (found in a trial)
    folder = write_pairwise_dataset(tmp_path / "pw", n=60)
    rows = _lines(folder / "preferences.jsonl")
    twice = [r | {"user_id": f"{who}{i}"} for i, r in enumerate(rows) for who in ("u", "x")]
    (folder / "preferences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in twice))
    (folder / "prompts.jsonl").unlink()
    # when it loads
    summary = load_dataset(folder, DatasetConfig()).summary
    # then a warning says how many held-out rows are training rows
    leaks = [w for w in summary["split_warnings"] if "repeat a training row" in w]
    assert len(leaks) == 1 and leaks[0].startswith("preferences: "), summary["split_warnings"]


def test_a_control_character_inside_a_conversation_is_refused(tmp_path):
    folder = write_hh_dataset(tmp_path / "hh", n_pairs=60)
    chosen = hh_text([("user", "Say hi."), ("assistant", "hi\x00there")])
    _rewrite(folder / "preferences.jsonl", 3, chosen=chosen)
    with pytest.raises(TableError) as e:
        load_dataset(folder, DatasetConfig())
    assert _problems(e.value) == [("preferences.jsonl", 3, "chosen")]
    assert "has a message that contains a control character" in str(e.value)


def test_a_dataset_with_no_training_rows_at_all_is_refused_per_table(tmp_path):
    # given settings that send every row to the valid or test split
    folder = write_pairwise_dataset(tmp_path / "pw", n=60)
    with pytest.raises(TableError) as e:
        load_dataset(folder, DatasetConfig(valid_fraction=0.5, test_fraction=0.5))
    # then each table a stage trains on is named once, with the train split and its readers
    assert ("preferences.jsonl", 0, "split") in _problems(e.value)
    assert "no rows in the train split (train 0, " in str(e.value)
    assert "needed by SFT and the reward model" in str(e.value)


def test_a_missing_field_is_told_from_a_null_one_and_a_miscased_name_is_named(tmp_path):
    folder = write_pairwise_dataset(tmp_path / "pw", n=40)
    path = folder / "preferences.jsonl"
    rows = _lines(path)
    rows[7]["Chosen"] = rows[7].pop("chosen")  # row 8: a typo in the field's name
    del rows[9]["rejected"]  # row 10: left out
    rows[11]["rejected"] = None  # row 12: there, but null
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(TableError) as e:
        load_dataset(folder)
    messages = {(p.row, p.field): p.message for p in e.value.problems}
    assert messages == {
        (8, "chosen"): "missing field (the row has 'Chosen': field names are case-sensitive)",
        (10, "rejected"): "missing field",
        (12, "rejected"): "is null",
    }


def test_bad_rows_are_each_named_by_file_row_and_field(tmp_path):
    folder = write_kwise_dataset(tmp_path / "kw", n=20)
    _rewrite(folder / "preferences.jsonl", 3, ranking=[0, 0, 1, 2])  # K = 4, not a permutation
    _rewrite(folder / "preferences.jsonl", 6, responses=["fine", "  "])  # K = 2, one empty
    with pytest.raises(TableError) as e:
        load_dataset(folder)
    # each once (a row-wise check fails under every column of the row), with its own value
    assert sorted(_problems(e.value)) == [
        ("preferences.jsonl", 3, "ranking"),
        ("preferences.jsonl", 6, "responses"),
    ]
    assert "best first (got a list of 4: [0, 0, 1, 2])" in str(e.value)


def test_a_conversation_not_ending_on_an_assistant_turn_is_refused(tmp_path):
    folder = write_hh_dataset(tmp_path / "hh", n_pairs=20)
    _rewrite(
        folder / "preferences.jsonl", 2, rejected="\n\nHuman: Say it.\n\nAssistant: no\n\nHuman: ?"
    )
    demo = {"messages": [{"role": "user", "content": "Hi"}], "user_id": "user-3"}
    _rewrite(folder / "demonstrations.jsonl", 4, **demo)
    with pytest.raises(TableError) as e:
        load_dataset(folder)
    assert set(_problems(e.value)) == {
        ("preferences.jsonl", 2, "rejected"),
        ("demonstrations.jsonl", 4, "messages"),
    }
    assert "does not end on an assistant turn" in str(e.value)


def test_an_empty_chosen_and_an_unknown_shape_are_refused(tmp_path):
    folder = write_pairwise_dataset(tmp_path / "pw", n=10)
    _rewrite(folder / "preferences.jsonl", 7, chosen="")
    with pytest.raises(TableError) as e:
        load_dataset(folder)
    assert _problems(e.value) == [("preferences.jsonl", 7, "chosen")]

    (folder / "preferences.jsonl").write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    with pytest.raises(TableError, match="fit none of the shapes"):
        load_dataset(folder)


def _put_turns(folder: Path, turns: list[dict], answer: str) -> None:
    """`turns` as row 2 of prompts.jsonl, and with `answer` after them as row 4 of
    demonstrations.jsonl."""
    _rewrite(folder / "prompts.jsonl", 2, messages=turns, prompt=None)
    _rewrite(
        folder / "demonstrations.jsonl",
        4,
        messages=[*turns, {"role": "assistant", "content": answer}],
    )


def _refused_in_each_table(folder: Path, hh: str) -> TableError:
    """With `hh` (HH text up to the answer) as row 6's pair: the dataset's refusal, which
    names the conversations _put_turns wrote and both sides of the pair."""
    _rewrite(folder / "preferences.jsonl", 6, chosen=hh + "apple", rejected=hh + "no")
    with pytest.raises(TableError) as e:
        load_dataset(folder)
    assert set(_problems(e.value)) == {
        ("prompts.jsonl", 2, "messages"),
        ("demonstrations.jsonl", 4, "messages"),
        ("preferences.jsonl", 6, "chosen"),
        ("preferences.jsonl", 6, "rejected"),
    }
    return e.value


def test_a_conversation_whose_question_is_blank_is_refused_as_a_blank_prompt_is(tmp_path):
    # given a blank last user turn in a prompts conversation (row 2), a demonstration
    # (row 4) and a preference pair in HH text (row 6): the text prompt "  " is refused
    folder = write_hh_dataset(tmp_path / "hh", n_pairs=20)
    blank = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "  "}]
    _put_turns(folder, blank, "apple apple")
    hh = "\n\nHuman: Say apple.\n\nAssistant: ok\n\nHuman:  \n\nAssistant: "
    # then each is refused, naming the turn: PPO and the evaluation would answer nothing
    refusal = _refused_in_each_table(folder, hh)
    assert "its last user turn (the one answered) is empty" in str(refusal)


@pytest.mark.parametrize(
    ("blank", "first_turns", "hh_start"),
    [
        # a blank earlier user turn (the last one has text)
        ("user", [("user", " "), ("assistant", "Hi.")], "\n\nHuman: \n\nAssistant: Hi."),
        # a blank earlier assistant turn (an exchange cut short by its export)
        ("assistant", [("user", "Hi."), ("assistant", "\n")], "\n\nHuman: Hi.\n\nAssistant: "),
    ],
)
def test_a_conversation_with_a_blank_earlier_turn_is_refused(
    tmp_path, blank, first_turns, hh_start
):
    # given such a turn in a prompts conversation (row 2), a demonstration (row 4) and a
    # preference pair in HH text (row 6)
    folder = write_hh_dataset(tmp_path / "hh", n_pairs=20)
    turns = [
        *({"role": role, "content": content} for role, content in first_turns),
        {"role": "user", "content": "Say apple."},
    ]
    _put_turns(folder, turns, "apple")
    hh = hh_start + "\n\nHuman: Say apple.\n\nAssistant: "
    # then each is refused before any training, naming file, row and field, and the turn
    refusal = _refused_in_each_table(folder, hh)
    said = f"an earlier {blank} turn is empty (got {{'role': '{blank}'"
    assert all(p.message.startswith(said) for p in refusal.problems), str(refusal)


def test_a_blank_system_turn_is_let_through(tmp_path):
    # given a prompt and a demonstration that open on an empty system prompt
    folder = write_hh_dataset(tmp_path / "hh", n_pairs=20)
    turns = [{"role": "system", "content": ""}, {"role": "user", "content": "Say apple."}]
    _put_turns(folder, turns, "apple")
    # then the data loads: chat templates render it, and it is common
    assert load_dataset(folder)


def test_a_row_longer_than_the_context_is_refused_dropped_or_cut(tmp_path, tokenizer):
    folder = write_pairwise_dataset(tmp_path / "pw", n=40)
    long_prompt = "Say the word apple twice. " * 30 + "Now say it."
    _rewrite(folder / "preferences.jsonl", 9, prompt=long_prompt)
    check = LengthCheck(tokenizer, max_len=64, max_new_tokens=8)

    with pytest.raises(TableError) as e:
        load_dataset(folder, DatasetConfig(overlong="refuse"), check)
    # the row, and first a line saying which settings would run without it
    assert _problems(e.value) == [
        ("preferences.jsonl", 0, "rows"),
        ("preferences.jsonl", 9, "prompt"),
    ]
    assert "context 64" in str(e.value)
    assert "1 row does not fit the context of 64 tokens" in str(e.value)
    assert "set dataset.overlong to 'drop' or 'truncate'" in str(e.value)

    dropped = load_dataset(folder, DatasetConfig(overlong="drop"), check)
    assert len(dropped.preferences) == 39
    assert dropped.summary["overlong"]["preferences.jsonl"] == {"dropped": 1}
    assert dropped.summary["overlong_rows"]["preferences.jsonl"] == {"dropped": [9]}

    cut = load_dataset(folder, DatasetConfig(overlong="truncate"), check)
    assert cut.summary["overlong"]["preferences.jsonl"] == {"truncated": 1}
    assert cut.summary["overlong_rows"]["preferences.jsonl"] == {"truncated": [9]}
    item = next(i for i in cut.preferences if i.row == 9)
    assert item.prompt.endswith("Now say it.") and check.need(item.prompt, item.responses) <= 64


def test_a_too_long_row_and_a_user_in_two_splits_are_refused_at_once(tmp_path, tokenizer):
    # given a dataset with a row longer than the context (row 9) and a user in two stated
    # splits (user-0: prompts row 1 in train, preferences row 41 in test)
    folder = write_hh_dataset(tmp_path / "hh", n_pairs=60)
    _rewrite(folder / "prompts.jsonl", 1, split="train")
    _rewrite(folder / "preferences.jsonl", 41, split="test")
    rows = _lines(folder / "preferences.jsonl")
    long_turn = "Say the word apple twice. " * 30
    _rewrite(folder / "preferences.jsonl", 9, chosen=rows[8]["chosen"] + long_turn)
    check = LengthCheck(tokenizer, max_len=128, max_new_tokens=8)
    with pytest.raises(TableError) as e:
        load_dataset(folder, DatasetConfig(), check)
    # then one refusal names both: the user in two splits did not wait for the long row's fix
    found = {(name, row, field) for name, row, field in _problems(e.value)}
    assert {row for name, row, field in found if field == "chosen"} == {9}
    assert any(field == "user_id" for _, _, field in found), found
    assert "user 'user-0'" in str(e.value)


def test_message_keys_besides_role_and_content_are_dropped_and_counted(tmp_path):
    # given Parquet demonstrations where one message has a name: Arrow gives every other
    # message of the file name: None
    folder = write_hh_dataset(tmp_path / "hh", n_pairs=60, fmt="parquet")
    same = load_dataset(folder)
    path = folder / "demonstrations.parquet"
    rows = pd.read_parquet(path).to_dict("records")
    rows = [r | {"messages": [dict(m) for m in r["messages"]]} for r in rows]
    rows[3]["messages"][0]["name"] = "alice"
    pd.DataFrame(rows).to_parquet(path)
    assert pd.read_parquet(path)["messages"][0][0]["name"] is None
    # when it is read
    data = load_dataset(folder)
    # then every row loads as without the key, and the summary counts the one name it ignored
    assert [(d.prompt, d.responses) for d in data.demonstrations] == [
        (d.prompt, d.responses) for d in same.demonstrations
    ]
    assert data.summary["ignored_message_keys"] == {"demonstrations": {"name": 1}}
    assert "ignored_message_keys" not in same.summary
    # and the notes that data validate, the run's log and report.md print name it
    from instructflow.tasks.dataset_names import notes

    assert "ignored message keys: demonstrations.parquet: name (1 messages)" in notes(data.summary)
    assert not any("message keys" in line for line in notes(same.summary))


def test_a_message_needs_a_role_and_string_content_whatever_else_it_has(tmp_path):
    # given conversations as a Hub export writes them: null keys, and one whose answer is
    # a tool call without content
    folder = write_hh_dataset(tmp_path / "hh", n_pairs=40)
    rows = _lines(folder / "demonstrations.jsonl")
    for row in rows:
        row["messages"] = [m | {"tool_calls": None, "name": None} for m in row["messages"]]
    call = [{"type": "function", "function": {"name": "say", "arguments": "{}"}}]
    rows[5]["messages"][-1] = {"role": "assistant", "content": None, "tool_calls": call}
    (folder / "demonstrations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # when it is read, then only the row without string content is refused
    with pytest.raises(TableError) as e:
        load_dataset(folder)
    assert _problems(e.value) == [("demonstrations.jsonl", 6, "messages")]
    assert "has a message whose content is not a string (got {'role': 'assistant'" in str(e.value)
    rows[5]["messages"][-1]["content"] = "apple apple"
    (folder / "demonstrations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # with content it loads; of the dropped keys only the one holding a value is counted
    summary = load_dataset(folder).summary
    assert summary["ignored_message_keys"] == {"demonstrations": {"tool_calls": 1}}


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_misspelt_role_is_refused_naming_the_role_the_row_has_and_the_allowed_ones(tmp_path, fmt):
    # given a conversation table whose row 4 answers as 'assitant', in JSONL or Parquet
    folder = write_hh_dataset(tmp_path / "hh", n_pairs=40, fmt=fmt)
    path = folder / f"demonstrations.{fmt}"
    rows = _lines(path) if fmt == "jsonl" else pd.read_parquet(path).to_dict("records")
    rows = [r | {"messages": [dict(m) for m in r["messages"]]} for r in rows]
    rows[3]["messages"][1]["role"] = "assitant"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pd.DataFrame(rows).to_parquet(path)
    # when it is read
    with pytest.raises(TableError) as e:
        load_dataset(folder)
    # then the one problem names the file, row and field, the rule broken (the role, not
    # the content), the allowed roles and the message holding the bad one
    assert _problems(e.value) == [(f"demonstrations.{fmt}", 4, "messages")]
    (problem,) = e.value.problems
    assert problem.message.startswith(
        "has a message whose role is not 'system', 'user' or 'assistant' (got {'role': 'assitant',"
    )


def test_the_summary_says_how_prompts_were_rendered_not_whether_a_template_exists(tmp_path):
    tok = train_tokenizer(["Say the word apple twice."] * 5, vocab_size=300)
    tok.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    check = LengthCheck(tok, max_len=512, max_new_tokens=8)
    # given text prompts only: pairwise preferences, TRL prompt/completion demonstrations
    folder = write_pairwise_dataset(tmp_path / "pw", n=40)
    demos = [{"prompt": f"Say apple {i} times.", "completion": "apple"} for i in range(40)]
    (folder / "demonstrations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in demos))
    # when read with a tokenizer that has a chat template
    data = load_dataset(folder, DatasetConfig(), check)
    # then the prompts are the text given, and the summary says plain
    assert [d.prompt for d in data.demonstrations] == [d["prompt"] for d in demos]
    assert data.summary["rendering"] == "plain"

    # given conversations (rendered by the template) beside a prompts table of text
    hh = write_hh_dataset(tmp_path / "hh", n_pairs=40)
    data = load_dataset(hh, DatasetConfig(), check)
    # then it says which rows were which
    assert data.demonstrations[0].prompt.startswith("<|user|>")
    assert data.summary["rendering"] == (
        "chat_template (demonstrations.jsonl 40 rows, preferences.jsonl 40 rows),"
        " plain (prompts.jsonl 40 rows)"
    )
    # and warns: PPO samples text prompts from a policy trained on templated ones
    mixed = [w for w in data.summary["split_warnings"] if "rendered two ways" in w]
    assert mixed == [f"prompts are rendered two ways, {data.summary['rendering']}: the policy"
                     " is trained on one format and sampled and judged on the other (give"
                     " every table conversations, or every table text)"]  # fmt: skip
    (hh / "prompts.jsonl").unlink()  # PPO's prompts are then the preferences' rendered ones
    one_way = load_dataset(hh, DatasetConfig(), check).summary
    assert one_way["rendering"] == "chat_template"
    assert not [w for w in one_way["split_warnings"] if "rendered two ways" in w]


def test_demonstrations_may_mix_messages_and_prompt_response_rows(tmp_path):
    folder = write_pairwise_dataset(tmp_path / "pw", n=30)
    rows = [
        {"prompt": "Say apple twice.", "response": "apple apple"},
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Say cedar twice."},
                {"role": "assistant", "content": "cedar cedar"},
            ]
        },
    ]
    (folder / "demonstrations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_dataset(folder)
    assert [(d.prompt, d.responses) for d in data.demonstrations] == [
        ("Say apple twice.", ["apple apple"]),
        ("System: Be brief.\n\nHuman: Say cedar twice.", ["cedar cedar"]),
    ]

    rows.append({"prompt": "Only a prompt."})  # neither form complete
    (folder / "demonstrations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(TableError) as e:
        load_dataset(folder)
    assert _problems(e.value) == [("demonstrations.jsonl", 3, "messages")]
    assert "needs either messages or both prompt and response" in str(e.value)

    # a row with both forms is told it has both, not that it needs one of them
    rows[-1] = rows[1] | {"prompt": "Say cedar twice.", "response": "cedar cedar"}
    (folder / "demonstrations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(TableError) as e:
        load_dataset(folder)
    assert _problems(e.value) == [("demonstrations.jsonl", 3, "messages")]
    assert "has both messages and prompt + response" in str(e.value)
    assert "needs either" not in str(e.value)


@pytest.mark.parametrize(
    "message, shown",
    [
        ({"role": "assistant", "content": 3}, "(got {'role': 'assistant', 'content': 3})"),
        ({"role": "bot", "content": "Hi."}, "(got {'role': 'bot', 'content': 'Hi.'})"),
        ({"role": "assistant", "content": "a\x07b"}, "(got {'role': 'assistant', 'content': 'a\\x07b'})"),
    ],
)  # fmt: skip
def test_a_bad_message_is_shown_not_the_conversations_first_turns(tmp_path, message, shown):
    # given a conversation whose first turns fill the 80 characters a bad value is shown in
    folder = write_hh_dataset(tmp_path / "hh", n_pairs=40)
    rows = _lines(folder / "demonstrations.jsonl")
    system = {"role": "system", "content": "You are a careful assistant. " * 4}
    rows[5]["messages"] = [system, *rows[5]["messages"][:-1], message]
    (folder / "demonstrations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # then the problem shows the message at fault
    with pytest.raises(TableError) as e:
        load_dataset(folder)
    assert _problems(e.value) == [("demonstrations.jsonl", 6, "messages")]
    assert shown in str(e.value)


def test_users_split_apart_because_another_table_has_no_user_ids_are_warned_about(tmp_path):
    # given pairs whose every row names one of 60 users, beside prompts without user ids
    folder = write_pairwise_dataset(tmp_path / "pw", n=300)
    rows = _lines(folder / "preferences.jsonl")
    rows = [r | {"user_id": f"u{i % 60}"} for i, r in enumerate(rows)]
    (folder / "preferences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # when it loads, the dataset is split by prompt (a table has no user ids) ...
    summary = load_dataset(folder).summary
    assert summary["split_rule"] == "prompt_hash"
    # ... and the users that landed in two splits are said, with the table to fix
    (warning,) = [w for w in summary["split_warnings"] if "not by user" in w]
    assert warning.startswith("split by prompt, not by user: prompts.jsonl has no user_id, so ")
    assert " of 60 users have rows in more than one split" in warning
    # without the prompts table every row has a user: split by user, nothing to say
    (folder / "prompts.jsonl").unlink()
    summary = load_dataset(folder).summary
    assert summary["split_rule"] == "user_id"
    assert not [w for w in summary["split_warnings"] if "not by user" in w]


def test_a_prompt_asked_by_users_in_two_splits_is_warned_about(tmp_path):
    # given pairs split by user, one prompt of which a second user (in another split) asked
    folder = write_pairwise_dataset(tmp_path / "pw", n=300)
    (folder / "prompts.jsonl").unlink()
    rows = _lines(folder / "preferences.jsonl")
    rows = [r | {"user_id": f"u{i % 60}"} for i, r in enumerate(rows)]
    summary = load_dataset(_with(folder, rows)).summary
    assert summary["split_rule"] == "user_id"
    assert not [w for w in summary["split_warnings"] if "more than one split" in w]
    users = {r["user_id"]: hash_split(r["user_id"], 0.1, 0.2) for r in rows}  # the defaults
    other = next(u for u, s in users.items() if s != users[rows[0]["user_id"]])
    rows.append(rows[0] | {"user_id": other, "chosen": "Another answer."})
    # then the prompt is named, with a row on each side
    summary = load_dataset(_with(folder, rows)).summary
    (warning,) = [w for w in summary["split_warnings"] if "more than one split" in w]
    assert warning.startswith("1 prompt is in more than one split (users in different splits")
    assert f"preferences.jsonl row 1 ({users[rows[0]['user_id']]})" in warning
    assert f"preferences.jsonl row {len(rows)} ({users[other]})" in warning


def _with(folder: Path, rows: list[dict]) -> Path:
    (folder / "preferences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_a_test_split_of_one_prompt_is_refused_before_the_judge_needs_two(tmp_path):
    # given pairs that state their splits, one row of which is test
    folder = write_pairwise_dataset(tmp_path / "pw", n=60)
    (folder / "prompts.jsonl").unlink()
    rows = _lines(folder / "preferences.jsonl")
    rows = [
        r | {"split": "test" if i == 0 else ("valid" if i < 6 else "train")}
        for i, r in enumerate(rows)
    ]
    (folder / "preferences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # then it is refused here, not when the held-out judge splits its test split in two
    # (mid-run, after SFT and the reward model had trained)
    with pytest.raises(TableError, match="the test split holds 1 user") as e:
        load_dataset(folder)
    assert _problems(e.value) == [("preferences.jsonl", 0, "split")]
    # two test prompts are enough
    rows[6]["split"] = "test"
    (folder / "preferences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load_dataset(folder).summary["split_counts"]["preferences"]["test"] == 2


def test_the_hubs_validation_split_name_is_read_as_valid(tmp_path):
    # given pairs that state their splits with the Hub's names (train / validation / test)
    folder = write_pairwise_dataset(tmp_path / "pw", n=60)
    (folder / "prompts.jsonl").unlink()
    names = ["test"] * 6 + ["validation"] * 6 + ["train"] * 48
    rows = _lines(folder / "preferences.jsonl")
    rows = [r | {"split": name} for r, name in zip(rows, names, strict=True)]
    _with(folder, rows)
    # then `validation` rows are the valid split, as `valid` rows would be
    data = load_dataset(folder)
    assert data.summary["split_counts"]["preferences"] == {"train": 48, "valid": 6, "test": 6}
    # and a name that is no split is still refused, saying what is allowed
    _with(folder, [rows[0] | {"split": "holdout"}, *rows[1:]])
    with pytest.raises(TableError, match="'validation', 'val', 'dev' for valid") as e:
        load_dataset(folder)
    assert _problems(e.value) == [("preferences.jsonl", 1, "split")]


def test_split_names_in_another_case_are_read_as_ours(tmp_path):
    # given pairs whose splits are capitalised, as some Hub exports and tools write them
    folder = write_pairwise_dataset(tmp_path / "pw", n=60)
    (folder / "prompts.jsonl").unlink()
    names = ["TEST"] * 6 + ["Validation"] * 3 + ["Dev"] * 3 + ["Train"] * 48
    rows = _lines(folder / "preferences.jsonl")
    _with(folder, [r | {"split": name} for r, name in zip(rows, names, strict=True)])
    # then they load into our splits, as the lower-case names would (they were refused)
    data = load_dataset(folder)
    assert data.summary["split_counts"]["preferences"] == {"train": 48, "valid": 6, "test": 6}


def test_rankings_holding_one_response_twice_are_warned_about_with_their_rows(tmp_path):
    from instructflow.tasks.splits import identical_responses

    # given K-wise rankings, two of them (rows 2 and 5) holding one response twice up to spaces
    rows = [("d/p.jsonl", 1, ["a", "b", "c", "d"]), ("d/p.jsonl", 2, ["a", "b ", "b", "d"])]
    rows += [("d/p.jsonl", 3, ["x", "y", "z", "w"]), ("d/p.jsonl", 5, ["", "q", "", "r"])]
    # then one warning names the file, the count and the rows
    assert identical_responses(rows) == [
        "p.jsonl: 2 rankings hold the same response twice (rows 2, 5): such a pair orders"
        " nothing, and counts as a tie in the reward model's and the judge's accuracy"
    ]
    assert identical_responses(rows[:1] + rows[2:3]) == []


def test_a_warning_says_row_for_one_row_and_rows_for_several():
    from instructflow.tasks.splits import repeated_rows, tied_scores

    # given ties: one row of a.jsonl, two of b.jsonl, seven of c.jsonl
    rows = [("d/a.jsonl", 4, {"margin": 0})]
    rows += [("d/b.jsonl", r, {"margin": 0}) for r in (2, 6)]
    rows += [("d/c.jsonl", r, {"margin": 0}) for r in range(1, 8)]
    # then a lone row is "row N", several are "rows N, M", more than five end in "..."
    assert [w.split(":")[1] for w in tied_scores(rows)] == [
        " 1 pair has equal scores (row 4)",
        " 2 pairs have equal scores (rows 2, 6)",
        " 7 pairs have equal scores (rows 1, 2, 3, 4, 5, ...)",
    ]
    # and a warning naming rows in several files words each file's rows by its own count
    seen = [(("q", "a"), "train", "d/a.jsonl", 1), (("q", "a"), "train", "d/a.jsonl", 2)]
    seen += [(("q", "a"), "train", "d/b.jsonl", r) for r in (3, 5)]
    (warning,) = repeated_rows({"demonstrations": seen})
    assert warning.endswith("(a.jsonl row 2; b.jsonl rows 3, 5)")


def test_a_kwise_dataset_with_a_repeated_response_loads_with_a_warning(tmp_path):
    folder = write_kwise_dataset(tmp_path / "kw", n=60)
    rows = _lines(folder / "preferences.jsonl")
    rows[2]["responses"][1] = rows[2]["responses"][0]  # a ranking of K = 4
    (folder / "preferences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = load_dataset(folder, DatasetConfig()).summary
    (warning,) = [w for w in summary["split_warnings"] if "same response twice" in w]
    assert warning.startswith("preferences.jsonl: 1 ranking holds the same response twice (row 3)")


def test_an_empty_split_a_table_took_from_another_tables_stated_splits_says_so(tmp_path):
    # given pairs with no split column, and prompts (the same prompts) all stated `train`
    folder = write_pairwise_dataset(tmp_path / "pw", n=60)
    prompts = [json.loads(line) for line in (folder / "prompts.jsonl").read_text().splitlines()]
    (folder / "prompts.jsonl").write_text(
        "".join(json.dumps(r | {"split": "train"}) + "\n" for r in prompts)
    )
    with pytest.raises(TableError) as e:
        load_dataset(folder)
    # then the refusal of the preferences' empty splits says where their splits came from
    # (it said to fix "the rows' `split` column", which preferences.jsonl does not have)
    said = [p.message for p in e.value.problems if p.file.endswith("preferences.jsonl")]
    assert said and all(
        "preferences.jsonl states no split: a row takes the split its prompt (or user) has in"
        " prompts.jsonl, which states splits" in m
        for m in said
    )


def test_pairs_whose_own_scores_tie_are_warned_about_with_their_rows():
    from instructflow.tasks.splits import tied_scores

    # given pairs with scores: rows 2 (equal scores) and 4 (margin 0) are ties by their own data
    rows = [("d/p.jsonl", 1, {"score_chosen": 8.0, "score_rejected": 5.5})]
    rows += [("d/p.jsonl", 2, {"score_chosen": 7, "score_rejected": 7.0})]
    rows += [("d/p.jsonl", 3, {}), ("d/p.jsonl", 4, {"margin": 0}), ("d/p.jsonl", 5, {"margin": 1})]
    # then one warning names the file, the count and the rows
    assert tied_scores(rows) == [
        "p.jsonl: 2 pairs have equal scores (rows 2, 4): each is trained as chosen over"
        " rejected, an order its scores do not give; drop them if they are ties"
    ]
    assert tied_scores(rows[:1] + rows[2:3] + rows[4:]) == []


def test_pairs_whose_own_scores_rate_rejected_above_chosen_are_warned_about():
    from instructflow.tasks.splits import reversed_scores

    # given pairs with scores: row 2 scores rejected higher, row 4 has a negative margin
    rows = [("d/p.jsonl", 1, {"score_chosen": 8.0, "score_rejected": 5.5})]
    rows += [("d/p.jsonl", 2, {"score_chosen": 2, "score_rejected": 7.0})]
    rows += [
        ("d/p.jsonl", 3, {}),
        ("d/p.jsonl", 4, {"margin": -1.5}),
        ("d/p.jsonl", 5, {"margin": 0}),
    ]
    # then one warning names the file, the count and the rows, and says the pair trains
    # the reverse of what its labeler scored; a tie (row 5) is not this warning's
    assert reversed_scores(rows) == [
        "p.jsonl: 2 pairs rate rejected above chosen by their own scores (score_rejected >"
        " score_chosen, or a negative margin; rows 2, 4): each is trained as chosen over"
        " rejected, the reverse of its scores; swap chosen and rejected there if they were"
        " mixed up"
    ]
    assert reversed_scores(rows[:1] + rows[2:3] + rows[4:]) == []


def test_a_pairwise_dataset_with_reversed_scores_loads_with_a_warning(tmp_path):
    folder = write_pairwise_dataset(tmp_path / "pw", n=60)
    rows = _lines(folder / "preferences.jsonl")
    rows = [r | {"score_chosen": 9.0, "score_rejected": 4.0} for r in rows]
    rows[4] |= {"score_chosen": 1.0}
    _with(folder, rows)
    summary = load_dataset(folder, DatasetConfig()).summary
    (warning,) = [w for w in summary["split_warnings"] if "rejected above chosen" in w]
    assert warning.startswith("preferences.jsonl: 1 pair rates rejected above chosen by its own")
    assert "(score_rejected > score_chosen, or a negative margin; row 5)" in warning


def test_a_pairwise_dataset_with_tied_scores_loads_with_a_warning(tmp_path):
    folder = write_pairwise_dataset(tmp_path / "pw", n=60)
    rows = _lines(folder / "preferences.jsonl")
    rows = [r | {"score_chosen": 9.0, "score_rejected": 4.0} for r in rows]
    rows[4] |= {"score_rejected": 9.0}
    _with(folder, rows)
    summary = load_dataset(folder, DatasetConfig()).summary
    (warning,) = [w for w in summary["split_warnings"] if "equal scores" in w]
    assert warning.startswith("preferences.jsonl: 1 pair has equal scores (row 5)")


@pytest.mark.parametrize("form", ["hh_text", "ultrafeedback"])
def test_conversation_pairs_with_tied_scores_load_with_the_same_warning(tmp_path, form):
    # given conversation pairs with scores beside them: HH text, or ultrafeedback_binarized's
    # form (a text prompt beside message lists, score_chosen / score_rejected)
    folder = write_hh_dataset(tmp_path / "hh", n_pairs=60)
    rows = [
        r | {"score_chosen": 9.0, "score_rejected": 4.0}
        for r in _lines(folder / "preferences.jsonl")
    ]
    if form == "ultrafeedback":
        for r in rows:
            chosen, rejected = parse_hh(r["chosen"]), parse_hh(r["rejected"])
            r |= {"prompt": chosen[-2]["content"], "chosen": chosen, "rejected": rejected}
    rows[4] |= {"score_rejected": 9.0}  # row 5: a tie by its own scores
    rows[7] |= {"margin": 0}  # row 8: a tie by its margin
    _with(folder, rows)
    # when it loads
    data = load_dataset(folder, DatasetConfig())
    # then the scores are kept, and the ties are warned about as a text pair's are
    assert data.preferences[0].meta["score_chosen"] == 9.0
    (warning,) = [w for w in data.summary["split_warnings"] if "equal scores" in w]
    assert warning.startswith("preferences.jsonl: 2 pairs have equal scores (rows 5, 8)")
    assert "score_chosen" not in data.summary["ignored_columns"].get("preferences", [])


def test_a_test_split_of_few_rows_is_warned_about_whatever_its_share():
    from instructflow.tasks.split_sizes import few_test_rows

    # 12 rows, 2 of them test: a fair share, but a win rate on 2 prompts says little
    (warning,) = few_test_rows({"preferences": {"train": 9, "valid": 1, "test": 2}})
    # 0.98 / sqrt(2) = 0.693
    assert warning.startswith("preferences: the test split holds only 2 rows")
    assert "a win rate on 2 prompts is known to about +-0.69" in warning
    # the prompts table's test rows are evaluated too: 49 prompts give 0.98 / 7 = 0.14,
    # 50 leave only the judge short of rows
    assert (
        "on 49 prompts is known to about +-0.14"
        in few_test_rows({"preferences": {"test": 40}, "prompts": {"test": 9}})[0]
    )
    (judge_only,) = few_test_rows({"preferences": {"test": 40}, "prompts": {"test": 10}})
    assert "held-out judge" in judge_only and "win rate" not in judge_only
    # 50 preferences rows, or none (refused elsewhere): nothing
    assert few_test_rows({"preferences": {"train": 200, "test": 50}}) == []
    assert few_test_rows({"preferences": {"train": 20}}) == []
    assert few_test_rows({"prompts": {"test": 3}}) == []


def test_the_few_test_rows_warning_counts_a_prompt_both_tables_hold_once(tmp_path):
    # given preferences and a prompts table holding the same prompts (as a Hub dataset's are)
    folder = write_hh_dataset(tmp_path / "hh", n_pairs=40)
    data = load_dataset(folder, DatasetConfig())
    test_rows = data.summary["split_counts"]["preferences"]["test"]
    assert data.summary["split_counts"]["prompts"]["test"] == test_rows
    # when the warning about a thin test split is written
    (warning,) = [w for w in data.summary["split_warnings"] if "a win rate on" in w]
    # then its win rate rests on the distinct test prompts the evaluation samples, not twice them
    # (12: half the pairs are multi-turn, another prompt than the prompts table's text)
    n = len(_lines(_written_eval_test(data, tmp_path)))
    assert n < 2 * test_rows
    assert f"a win rate on {n} prompts is known to about +-{0.98 / n**0.5:.2f}" in warning


def _written_eval_test(data, tmp_path: Path) -> Path:
    write_layout(data, tmp_path / "layout")
    return tmp_path / "layout" / layout.EVAL_TEST


def test_rows_too_long_in_several_tables_are_counted_per_table_not_against_the_first(
    tmp_path, tokenizer
):
    # given a prompt too long for the context in both the preferences and the prompts table
    folder = write_pairwise_dataset(tmp_path / "pw", n=40)
    long_prompt = "Say the word apple twice. " * 30 + "Now say it."
    _rewrite(folder / "preferences.jsonl", 9, prompt=long_prompt)
    _rewrite(folder / "preferences.jsonl", 10, prompt=long_prompt + " Again.")
    _rewrite(folder / "prompts.jsonl", 3, prompt=long_prompt)
    check = LengthCheck(tokenizer, max_len=64, max_new_tokens=8)
    with pytest.raises(TableError) as e:
        load_dataset(folder, DatasetConfig(overlong="refuse"), check)
    # then the line saying what to change names the dataset and each table's count,
    # rather than putting all 3 rows on one table
    hint = next(p for p in e.value.problems if p.field == "rows")
    assert (hint.file, hint.row) == (str(folder), 0)
    assert hint.message.startswith(
        "3 rows (preferences.jsonl 2, prompts.jsonl 1) do not fit the context of 64 tokens"
    )


def test_a_table_whose_every_row_is_dropped_for_its_length_is_refused_naming_it(
    tmp_path, tokenizer
):
    # given demonstrations whose every prompt is longer than the context, beside
    # preferences that fit, and rows too long dropped (dataset.overlong: drop)
    folder = write_pairwise_dataset(tmp_path / "pw", n=40)
    long_prompt = "Say the word apple twice. " * 30
    demos = [{"prompt": long_prompt + f"Now {i}.", "response": "apple apple"} for i in range(40)]
    (folder / "demonstrations.jsonl").write_text("".join(json.dumps(d) + "\n" for d in demos))
    check = LengthCheck(tokenizer, max_len=64, max_new_tokens=8)
    # then the table is refused, naming it and why none is left: it did not run with SFT
    # on the preferred answers, as if there were no demonstrations table
    with pytest.raises(TableError) as e:
        load_dataset(folder, DatasetConfig(overlong="drop"), check)
    assert _problems(e.value) == [("demonstrations.jsonl", 0, "rows")]
    assert "all 40 rows are too long for the context of 64 tokens" in str(e.value)
    assert "dataset.overlong 'drop' left none" in str(e.value)


def test_preferences_emptied_by_their_length_say_why_not_only_no_usable_rows(tmp_path, tokenizer):
    # given a context the sampling room fills whole: no prompt can be cut to fit
    folder = write_pairwise_dataset(tmp_path / "pw", n=40)
    check = LengthCheck(tokenizer, max_len=8, max_new_tokens=8)
    with pytest.raises(TableError) as e:
        load_dataset(folder, DatasetConfig(overlong="truncate"), check)
    # then each table says its rows were all too long, with the room a prompt had (none)
    assert _problems(e.value) == [("preferences.jsonl", 0, "rows"), ("prompts.jsonl", 0, "rows")]
    assert "all 40 rows are too long for the context of 8 tokens" in str(e.value)
    assert "0 left for it" in str(e.value) and "no usable rows" not in str(e.value)


@pytest.mark.parametrize("room_over_context", [0, 8])
def test_a_context_no_prompt_fits_is_refused_in_one_line_not_row_by_row(
    tmp_path, tokenizer, room_over_context
):
    # given a context no larger than the sampling room: not one prompt leaves it
    folder = write_pairwise_dataset(tmp_path / "pw", n=40)
    context = 16
    check = LengthCheck(tokenizer, max_len=context, max_new_tokens=context + room_over_context)
    prompts = [r["prompt"] for r in _lines(folder / "prompts.jsonl")]
    prompts += [r["prompt"] for r in _lines(folder / "preferences.jsonl")]
    shortest = min(check.prompt_tokens(p) for p in prompts)
    # when it is read with rows too long refused
    with pytest.raises(TableError) as e:
        load_dataset(folder, DatasetConfig(overlong="refuse"), check)
    # then one problem says so, with the context, the room, the shortest prompt and the fix
    assert _problems(e.value) == [("pw", 0, "rows")]
    (problem,) = e.value.problems
    assert problem.message.startswith(
        f"no prompt fits the context of {context} tokens: each must leave {check.max_new_tokens}"
        f" of them to sampling, and the shortest prompt has {shortest} tokens: use a base model"
        f" with a context of at least {shortest + check.max_new_tokens} tokens"
    )
    assert "'drop'" not in problem.message  # dropping rows would leave none


def test_a_context_some_prompts_fit_still_names_each_row_that_does_not(tmp_path, tokenizer):
    # given one prompt too long and a context the shortest prompt fits with its room
    folder = write_pairwise_dataset(tmp_path / "pw", n=40)
    _rewrite(folder / "prompts.jsonl", 5, prompt="Say the word apple twice. " * 30)
    check = LengthCheck(tokenizer, max_len=64, max_new_tokens=8)
    with pytest.raises(TableError) as e:
        load_dataset(folder, DatasetConfig(overlong="refuse"), check)
    # then the row is named, with the hint of what to change
    assert _problems(e.value) == [("prompts.jsonl", 0, "rows"), ("prompts.jsonl", 5, "prompt")]
    assert "no prompt fits" not in str(e.value)


def test_a_pretrain_tables_stated_split_picks_the_documents_held_out_for_perplexity(tmp_path):
    from instructflow.world import layout

    # given a pretrain table whose rows state their split (the first 5 of 40 held out)
    folder = write_pairwise_dataset(tmp_path / "pw", n=60)
    docs = [
        {"text": f"document {n} about apples", "split": "validation" if n < 3 else
         ("test" if n < 5 else "train")}
        for n in range(40)
    ]  # fmt: skip
    _with_table(folder, "pretrain", docs)
    # when it loads and is written out for the stages
    data = load_dataset(folder)
    write_layout(data, tmp_path / "out")
    # then its split column is read (not listed as ignored), its valid and test documents
    # measure perplexity and its train documents, only they, are PPO-ptx's mix
    assert "pretrain" not in data.summary["ignored_columns"]
    held_out = _lines(tmp_path / "out" / layout.PRETRAIN_VALID)
    mix = _lines(tmp_path / "out" / layout.PRETRAIN_TRAIN)
    assert [d["text"] for d in held_out] == [d["text"] for d in docs[:5]]
    assert [d["text"] for d in mix] == [d["text"] for d in docs[5:]]
    # and a table that states none keeps every 10th document for perplexity
    _with_table(folder, "pretrain", [{"text": d["text"]} for d in docs])
    write_layout(load_dataset(folder), tmp_path / "again")
    assert len(_lines(tmp_path / "again" / layout.PRETRAIN_VALID)) == 4
    # and a bad split is refused, naming its row
    _with_table(folder, "pretrain", [*docs[:2], {"text": "x", "split": "holdout"}])
    with pytest.raises(TableError, match="pretrain.jsonl row 3 field 'split'"):
        load_dataset(folder)


def _with_table(folder: Path, name: str, rows: list[dict]) -> None:
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize(
    "docs",
    [
        [{"text": f"document {n}", "split": "valid"} for n in range(20)],
        [{"text": "the only document"}],  # every 10th from the first: held out
    ],
)
def test_a_pretrain_table_with_nothing_left_for_ptxs_mix_is_refused_before_training(tmp_path, docs):
    # given a pretrain table whose every document is held out for perplexity
    folder = write_pairwise_dataset(tmp_path / "pw", n=60)
    _with_table(folder, "pretrain", docs)
    # then it is refused when the dataset loads, naming the file and saying why: PPO-ptx
    # mixed nothing and crashed after SFT, the reward model and PPO had trained
    with pytest.raises(TableError, match="no documents for PPO-ptx's mix") as e:
        load_dataset(folder)
    assert [(Path(p.file).name, p.row, p.field) for p in e.value.problems] == [
        ("pretrain.jsonl", 0, "split")
    ]


def test_a_pretrain_table_with_no_document_held_out_is_warned_about(tmp_path):
    folder = write_pairwise_dataset(tmp_path / "pw", n=60)
    _with_table(folder, "pretrain", [{"text": f"doc {n}", "split": "train"} for n in range(20)])
    warnings = load_dataset(folder).summary["split_warnings"]
    assert (
        "pretrain.jsonl: no document is held out (train 20, held out 0): pretrain_perplexity"
        " is not measured; state split valid on some rows" in warnings
    )


def test_an_integer_category_is_read_as_the_family_it_names(tmp_path):
    # given a Hub table whose category is a label id, on every row (a Parquet int column)
    folder = write_pairwise_dataset(tmp_path / "d")
    rows = _lines(folder / "preferences.jsonl")
    (folder / "preferences.jsonl").unlink()
    pd.DataFrame([{**row, "category": i % 3} for i, row in enumerate(rows)]).to_parquet(
        folder / "preferences.parquet"
    )
    # when it is loaded and written as the pipeline's tables
    data = load_dataset(folder)
    write_layout(data, tmp_path / "out")
    # then each label id is a family, as text, in the tables the stages read
    families = {row["family"] for row in _lines(tmp_path / "out" / layout.RM_TRAIN)}
    assert families == {"0", "1", "2"}
