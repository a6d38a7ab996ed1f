"""TRL's dataset forms (prompt/completion, explicit-prompt conversations) load as their equivalents."""

import json
import random
from pathlib import Path

import pytest

from instructflow.tasks.dataset import load_dataset
from instructflow.tasks.tables import TableError
from instructflow.tasks.trl_forms import as_own_form

USER = [{"role": "user", "content": "Name a fruit."}]
APPLE = [{"role": "assistant", "content": "Apple."}]
CAR = [{"role": "assistant", "content": "A car."}]


def test_prompt_completion_rows_become_prompt_response_or_messages():
    row = {"prompt": "Name a fruit.", "completion": "Apple.", "user_id": "u1"}
    assert as_own_form("demonstrations", row) == (
        {"user_id": "u1", "prompt": "Name a fruit.", "response": "Apple."},
        True,
    )
    conversational = {"prompt": USER, "completion": APPLE}
    assert as_own_form("demonstrations", conversational) == ({"messages": USER + APPLE}, True)


def test_explicit_prompt_conversations_become_full_conversations():
    row = {"prompt": USER, "chosen": APPLE, "rejected": CAR, "split": "test"}
    assert as_own_form("preferences", row) == (
        {"chosen": USER + APPLE, "rejected": USER + CAR, "split": "test"},
        True,
    )


def test_a_text_prompt_beside_whole_conversations_is_read_as_trl_reads_it():
    # HuggingFaceH4/ultrafeedback_binarized: the text prompt repeats the conversations' user turn
    row = {"prompt": "Name a fruit.", "chosen": USER + APPLE, "rejected": USER + CAR, "id": 7}
    assert as_own_form("preferences", row) == (
        {"chosen": USER + APPLE, "rejected": USER + CAR, "id": 7},
        True,
    )
    # answers alone: the text prompt is the user's turn they answer
    answers = {"prompt": "Name a fruit.", "chosen": APPLE, "rejected": CAR}
    assert as_own_form("preferences", answers) == (
        {"chosen": USER + APPLE, "rejected": USER + CAR},
        True,
    )


@pytest.mark.parametrize(
    "table, row",
    [
        ("demonstrations", {"prompt": "Name a fruit.", "response": "Apple."}),  # our own form
        ("demonstrations", {"prompt": "Name a fruit.", "completion": APPLE}),  # mixed: left as is
        ("preferences", {"prompt": "Name a fruit.", "chosen": "Apple.", "rejected": "A car."}),
        ("preferences", {"prompt": USER, "chosen": "Apple.", "rejected": CAR}),
        ("prompts", {"prompt": "Name a fruit.", "completion": "Apple."}),
    ],
)
def test_other_rows_are_left_as_they_are(table, row):
    assert as_own_form(table, row) == (row, False)


def _write(folder: Path, name: str, rows: list[dict]) -> None:
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _tasks(n: int) -> list[tuple[str, str, str, str]]:
    rng = random.Random(0)
    words = ["apple", "river", "stone", "cloud", "maple", "tiger"]
    out = []
    for i in range(n):
        word = rng.choice(words)
        out.append((f"user-{i % 40}", f"Say {word} twice. ({i})", f"{word} {word}", "no"))
    return out


def _conversational_preferences(n: int) -> list[dict]:
    """TRL's conversational preferences: prompt, chosen and rejected as message lists."""
    return [
        {"prompt": [{"role": "user", "content": p}], "chosen": [{"role": "assistant", "content": g}],
         "rejected": [{"role": "assistant", "content": b}], "user_id": u}
        for u, p, g, b in _tasks(n)
    ]  # fmt: skip


def test_a_dataset_in_trls_forms_loads_as_the_same_dataset_in_ours(tmp_path):
    # given the same 120 rows written in TRL's conversational forms and in ours
    trl, own = tmp_path / "trl", tmp_path / "own"
    trl.mkdir(), own.mkdir()
    rows = _tasks(120)

    def turn(role: str, text: str) -> list[dict]:
        return [{"role": role, "content": text}]

    _write(trl, "preferences", [
        {"prompt": turn("user", p), "chosen": turn("assistant", g),
         "rejected": turn("assistant", b), "user_id": u}
        for u, p, g, b in rows
    ])  # fmt: skip
    _write(trl, "demonstrations", [
        {"prompt": p, "completion": g, "user_id": u} for u, p, g, _ in rows
    ])  # fmt: skip
    _write(own, "preferences", [
        {"chosen": turn("user", p) + turn("assistant", g),
         "rejected": turn("user", p) + turn("assistant", b), "user_id": u}
        for u, p, g, b in rows
    ])  # fmt: skip
    _write(own, "demonstrations", [
        {"prompt": p, "response": g, "user_id": u} for u, p, g, _ in rows
    ])  # fmt: skip
    # when both load
    ours, theirs = load_dataset(own), load_dataset(trl)
    # then they hold the same items in the same splits, and the summary counts the converted rows
    for table in ("demonstrations", "preferences"):
        left, right = getattr(ours, table), getattr(theirs, table)
        assert [(i.prompt, i.responses, i.ranking) for i in left] == [
            (i.prompt, i.responses, i.ranking) for i in right
        ]
    assert ours.summary["split_counts"] == theirs.summary["split_counts"]
    assert theirs.summary["trl_forms"] == {"demonstrations": 120, "preferences": 120}
    assert "trl_forms" not in ours.summary


def test_ultrafeedback_binarized_rows_load_as_the_same_conversations(tmp_path):
    # given the same 120 rows as whole conversations, and in ultrafeedback_binarized's form
    # (a text prompt, repeated as the first user turn of chosen and rejected; extra columns)
    own, hub = tmp_path / "own", tmp_path / "hub"
    own.mkdir(), hub.mkdir()
    rows = _tasks(120)

    def talk(prompt: str, answer: str) -> list[dict]:
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]

    _write(own, "preferences", [
        {"chosen": talk(p, g), "rejected": talk(p, b), "user_id": u} for u, p, g, b in rows
    ])  # fmt: skip
    _write(hub, "preferences", [
        {"prompt": p, "prompt_id": str(i), "chosen": talk(p, g), "rejected": talk(p, b),
         "messages": talk(p, g), "score_chosen": 8.0, "score_rejected": 3.0, "user_id": u}
        for i, (u, p, g, b) in enumerate(rows)
    ])  # fmt: skip
    # when both load
    ours, theirs = load_dataset(own), load_dataset(hub)
    # then they hold the same comparisons in the same splits; the text prompt is read as TRL
    # reads it (not at all: the conversations hold it); the scores are kept as a text
    # pair's are, and columns it has no use for are listed
    assert [(i.prompt, i.responses) for i in ours.preferences] == [
        (i.prompt, i.responses) for i in theirs.preferences
    ]
    assert ours.summary["split_counts"] == theirs.summary["split_counts"]
    assert theirs.summary["trl_forms"] == {"preferences": 120}
    assert theirs.preferences[0].meta == {"score_chosen": 8.0, "score_rejected": 3.0}
    assert theirs.summary["ignored_columns"]["preferences"] == ["messages"]


def test_a_bad_row_in_a_trl_form_is_named_by_file_row_and_field(tmp_path):
    prefs = _conversational_preferences(60)
    prefs[4]["rejected"] = [{"role": "assistant", "content": "  "}]  # row 5: an empty answer
    _write(tmp_path, "preferences", prefs)
    with pytest.raises(TableError) as e:
        load_dataset(tmp_path)
    assert [(Path(p.file).name, p.row, p.field) for p in e.value.problems] == [
        ("preferences.jsonl", 5, "rejected")
    ]


def test_a_conversational_prompt_only_row_becomes_a_prompt_conversation():
    row = {"prompt": USER, "user_id": "u1"}
    assert as_own_form("prompts", row) == ({"user_id": "u1", "messages": USER}, True)


def test_prompts_in_trls_conversational_form_load_as_the_same_prompts_as_text(tmp_path):
    # given the same preferences, with prompts as text in one dataset and as TRL's
    # conversational prompt-only rows (a one-turn list; a system turn first) in the other
    rows = _tasks(120)
    own, trl = tmp_path / "own", tmp_path / "trl"
    for folder in (own, trl):
        folder.mkdir()
        _write(folder, "preferences", [
            {"prompt": p, "chosen": g, "rejected": b, "user_id": u} for u, p, g, b in rows
        ])  # fmt: skip
    _write(own, "prompts", [{"prompt": p, "user_id": u} for u, p, _, _ in rows])
    _write(trl, "prompts", [
        {"prompt": [{"role": "user", "content": p}], "user_id": u} for u, p, _, _ in rows
    ])  # fmt: skip
    with (trl / "prompts.jsonl").open("a") as f:
        system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
        f.write(json.dumps({"prompt": system, "user_id": "user-1"}) + "\n")
    # when both load
    ours, theirs = load_dataset(own), load_dataset(trl)
    # then one user turn is its text, as in ours; longer ones are rendered like any conversation
    assert [i.prompt for i in theirs.prompts[:120]] == [i.prompt for i in ours.prompts]
    assert theirs.prompts[120].prompt == "System: Be brief.\n\nHuman: Hi?"
    assert theirs.summary["trl_forms"] == {"prompts": 121}


@pytest.mark.parametrize(
    "prompt, message",
    [
        ([{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}],
         "does not end on a user turn"),
        ([], "is an empty conversation"),
        ([{"role": "user", "text": "Hi?"}], "has a message whose content is not a string"),
        ([{"role": "user", "content": "Hi\x00?"}], "control character"),
    ],
)  # fmt: skip
def test_a_bad_conversational_prompt_is_named_by_file_row_and_field(tmp_path, prompt, message):
    rows = _tasks(60)
    _write(tmp_path, "preferences", [
        {"prompt": p, "chosen": g, "rejected": b, "user_id": u} for u, p, g, b in rows
    ])  # fmt: skip
    prompts = [{"prompt": [{"role": "user", "content": p}], "user_id": u} for u, p, _, _ in rows]
    prompts[2]["prompt"] = prompt  # row 3
    _write(tmp_path, "prompts", prompts)
    with pytest.raises(TableError, match=message) as e:
        load_dataset(tmp_path)
    # the field the file has (`prompt`), not the `messages` it is read as
    assert [(Path(p.file).name, p.row, p.field) for p in e.value.problems] == [
        ("prompts.jsonl", 3, "prompt")
    ]


@pytest.mark.parametrize(
    "prompt, completion, field, message",
    [
        ("Name a fruit.", ["Apple.", "Pear."], "completion", "got a list of strings"),
        ("Name a fruit.", APPLE, "completion", "is a list of messages while 'prompt' is text"),
        ("Name a fruit.", None, "completion", "got null"),
        (USER, "Apple.", "completion", "as 'prompt' is; got a str"),
        (7, "Apple.", "prompt", "got a number"),
    ],
)  # fmt: skip
def test_a_completion_of_the_wrong_type_is_named_as_the_user_wrote_it(
    tmp_path, prompt, completion, field, message
):
    # given TRL prompt/completion demonstrations, row 3 of which fits neither variant
    rows = _tasks(60)
    _write(tmp_path, "preferences", [
        {"prompt": p, "chosen": g, "rejected": b, "user_id": u} for u, p, g, b in rows
    ])  # fmt: skip
    demos = [{"prompt": p, "completion": g, "user_id": u} for u, p, g, _ in rows]
    demos[2] |= {"prompt": prompt, "completion": completion}
    _write(tmp_path, "demonstrations", demos)
    # then the one problem is on that row, in the field the user wrote (not 'response'),
    # saying which types it takes
    with pytest.raises(TableError, match=message) as e:
        load_dataset(tmp_path)
    assert [(Path(p.file).name, p.row, p.field) for p in e.value.problems] == [
        ("demonstrations.jsonl", 3, field)
    ]
    assert "a list of {role, content} messages" in str(e.value)


def test_a_table_whose_every_completion_is_messages_beside_a_text_prompt_is_one_problem(
    tmp_path,
):
    # given TRL demonstrations whose every row has a text prompt and a message-list completion
    # (half of the conversational form)
    rows = _tasks(60)
    _write(tmp_path, "preferences", [
        {"prompt": p, "chosen": g, "rejected": b, "user_id": u} for u, p, g, b in rows
    ])  # fmt: skip
    _write(tmp_path, "demonstrations", [
        {"prompt": p, "completion": [{"role": "assistant", "content": g}], "user_id": u}
        for u, p, g, _ in rows
    ])  # fmt: skip
    # then it is one problem for the whole file, saying what the form wants of both fields,
    # not 60 lines each saying a list of messages should be a list of messages
    with pytest.raises(TableError, match="while 'prompt' is text: in TRL's conversational") as e:
        load_dataset(tmp_path)
    assert [(Path(p.file).name, p.row, p.field) for p in e.value.problems] == [
        ("demonstrations.jsonl", 0, "completion")
    ]
    assert e.value.problems[0].message.endswith(", in all 60 rows")


def test_a_completion_without_its_prompt_says_the_prompt_is_missing(tmp_path):
    rows = _tasks(60)
    _write(tmp_path, "preferences", [
        {"prompt": p, "chosen": g, "rejected": b, "user_id": u} for u, p, g, b in rows
    ])  # fmt: skip
    _write(tmp_path, "demonstrations", [{"completion": "Apple."}])
    with pytest.raises(TableError, match="missing field") as e:
        load_dataset(tmp_path)
    assert [(Path(p.file).name, p.row, p.field) for p in e.value.problems] == [
        ("demonstrations.jsonl", 1, "prompt")
    ]


@pytest.mark.parametrize(
    "conversational, drop, fields",
    [
        (False, ("completion",), ["completion"]),
        (True, ("completion",), ["completion"]),
        (False, ("prompt", "completion"), ["prompt", "completion"]),
    ],
)  # fmt: skip
def test_a_demonstration_without_its_completion_names_completion(
    tmp_path, conversational, drop, fields
):
    # given TRL prompt/completion demonstrations (text, or message lists), row 3 of which
    # lacks its completion
    rows = _tasks(60)
    _write(tmp_path, "preferences", [
        {"prompt": p, "chosen": g, "rejected": b, "user_id": u} for u, p, g, b in rows
    ])  # fmt: skip
    demos = [
        {"prompt": USER, "completion": APPLE, "user_id": u}
        if conversational
        else {"prompt": p, "completion": g, "user_id": u}
        for u, p, g, _ in rows
    ]
    for name in drop:
        del demos[2][name]
    _write(tmp_path, "demonstrations", demos)
    # then the problems are on that row, in the fields the user's table has: not the
    # 'response' (or 'messages') it never wrote, nor its message-list prompt as bad text
    with pytest.raises(TableError, match="other 59 rows answer their 'prompt'") as e:
        load_dataset(tmp_path)
    assert [(Path(p.file).name, p.row, p.field) for p in e.value.problems] == [
        ("demonstrations.jsonl", 3, field) for field in fields
    ]


@pytest.mark.parametrize(
    "change, field, message",
    [
        ({"prompt": USER + ["oops"]}, "prompt", "item 2 is a str: 'oops'"),
        ({"chosen": "Apple."}, "chosen", "as in the table's other 59 rows; got a str"),
        ({"rejected": None}, "rejected", "got null"),
        ({"chosen": APPLE + [7]}, "chosen", "item 2 is a number"),
    ],
)  # fmt: skip
def test_one_bad_row_among_conversational_preferences_is_the_only_problem(
    tmp_path, change, field, message
):
    # given TRL conversational preferences (prompt, chosen, rejected as message lists),
    # row 3 of which keeps its `prompt` because it fits no form
    prefs = _conversational_preferences(60)
    prefs[2] |= change
    _write(tmp_path, "preferences", prefs)
    # then that row is the one problem, in the field the user wrote: not every other row
    # read as a text pair missing its prompt (one bad row used to give 180 problems)
    with pytest.raises(TableError, match=message) as e:
        load_dataset(tmp_path)
    assert [(Path(p.file).name, p.row, p.field) for p in e.value.problems] == [
        ("preferences.jsonl", 3, field)
    ]


def test_a_long_bad_item_in_a_conversational_answer_is_quoted_as_a_marked_excerpt(tmp_path):
    # given TRL conversational preferences whose row 3's chosen holds a completion of
    # kilobytes as a bare string among its messages
    prefs = _conversational_preferences(60)
    completion = "Apples are red. " * 500
    prefs[2]["chosen"] = APPLE + [completion]
    _write(tmp_path, "preferences", prefs)
    with pytest.raises(TableError) as e:
        load_dataset(tmp_path)
    # then the one problem names file, row and field, and quotes a short excerpt of the
    # value that says it is one: not the whole completion, nor a cut that reads as whole
    (problem,) = e.value.problems
    assert (Path(problem.file).name, problem.row, problem.field) == (
        "preferences.jsonl",
        3,
        "chosen",
    )
    assert len(str(problem)) < len(str(tmp_path)) + 300
    excerpt = problem.message.partition("item 2 is a str: ")[2]
    assert excerpt.endswith("...") and repr(completion).startswith(excerpt.removesuffix("..."))
    assert 20 < len(excerpt) < 100


def test_a_bad_answer_in_a_conversational_pair_quotes_the_answer_as_written(tmp_path):
    # given TRL conversational preferences with an empty chosen answer (row 4) and a
    # rejected answer equal to the chosen one (row 7)
    prefs = _conversational_preferences(60)
    prefs[3]["chosen"] = [{"role": "assistant", "content": ""}]
    prefs[6]["rejected"] = prefs[6]["chosen"]
    _write(tmp_path, "preferences", prefs)
    with pytest.raises(TableError) as e:
        load_dataset(tmp_path)
    # then each message quotes that field as the file holds it: one assistant message, not
    # the prompt's turns and the answer merged (which the file does not hold)
    found = {(p.row, p.field): p.message for p in e.value.problems}
    assert found[(4, "chosen")] == (
        "its final assistant turn is empty (got a list of 1: [{'role': 'assistant', 'content': ''}])"
    )
    assert found[(7, "rejected")].startswith(
        "is identical to 'chosen' (got a list of 1: [{'role': 'assistant'"
    )


def test_one_conversational_row_among_text_pairs_is_named_as_written(tmp_path):
    rows = _tasks(60)
    prefs = [{"prompt": p, "chosen": g, "rejected": b, "user_id": u} for u, p, g, b in rows]
    prefs[2] = {"prompt": USER, "chosen": APPLE, "rejected": CAR, "user_id": "user-1"}
    _write(tmp_path, "preferences", prefs)
    # then the row is named once, for being in the other form: not as 'prompt' missing
    with pytest.raises(TableError, match="other 59 rows give 'prompt', 'chosen' and") as e:
        load_dataset(tmp_path)
    assert [(Path(p.file).name, p.row, p.field) for p in e.value.problems] == [
        ("preferences.jsonl", 3, "chosen")
    ]


def test_a_bad_row_in_a_trl_form_names_the_fields_the_user_wrote_not_their_equivalents(tmp_path):
    # given TRL's prompt/completion demonstrations with an empty completion (row 3), a
    # conversational pair whose completion is an empty answer (row 4), and TRL's
    # conversational prompts with one holding a system turn alone (row 2)
    rows = _tasks(60)
    _write(tmp_path, "preferences", _conversational_preferences(60))
    demos = [{"prompt": p, "completion": g, "user_id": u} for u, p, g, _ in rows]
    demos[2]["completion"] = " "
    demos[3] = {"prompt": USER, "completion": [{"role": "assistant", "content": ""}]}
    demos[3]["user_id"] = rows[3][0]
    _write(tmp_path, "demonstrations", demos)
    prompts = [{"prompt": [{"role": "user", "content": p}], "user_id": u} for u, p, _, _ in rows]
    prompts[1]["prompt"] = [{"role": "system", "content": "Be brief."}]
    _write(tmp_path, "prompts", prompts)
    with pytest.raises(TableError) as e:
        load_dataset(tmp_path)
    # then each problem names the column of the file (not `response` or `messages`, which
    # the file does not have), and the system turn alone is "not ending on a user turn"
    found = sorted((Path(p.file).name, p.row, p.field, p.message) for p in e.value.problems)
    assert [f[:3] for f in found] == [
        ("demonstrations.jsonl", 3, "completion"),
        ("demonstrations.jsonl", 4, "prompt + completion"),
        ("prompts.jsonl", 2, "prompt"),
    ]
    assert found[2][3].startswith("does not end on a user turn")


def test_pairs_whose_text_prompt_is_hh_text_load_as_the_same_conversations(tmp_path):
    # given the same 120 rows as whole HH conversations, and in Dahoas/full-hh-rlhf's form
    # (the prompt in HH text up to "Assistant:", the answers alone, a `response` copy)
    own, hub = tmp_path / "own", tmp_path / "hub"
    own.mkdir(), hub.mkdir()
    rows = _tasks(120)
    _write(own, "preferences", [
        {"chosen": f"\n\nHuman: {p}\n\nAssistant: {g}",
         "rejected": f"\n\nHuman: {p}\n\nAssistant: {b}", "user_id": u} for u, p, g, b in rows
    ])  # fmt: skip
    _write(hub, "preferences", [
        {"prompt": f"\n\nHuman: {p}\n\nAssistant:", "response": f" {g}", "chosen": f" {g}",
         "rejected": f" {b}", "user_id": u} for u, p, g, b in rows
    ])  # fmt: skip
    # when both load
    ours, theirs = load_dataset(own), load_dataset(hub)
    # then the prompt is the conversation's user turn, not the HH text inside the Q/A frame
    assert [(i.prompt, i.responses) for i in ours.preferences] == [
        (i.prompt, i.responses) for i in theirs.preferences
    ]
    assert theirs.preferences[0].prompt == rows[0][1]
    assert ours.summary["split_counts"] == theirs.summary["split_counts"]
    assert theirs.summary["trl_forms"] == {"preferences": 120}
    # and so do whole HH conversations beside a prompt, in HH text or as text (they were
    # responses: the whole conversation the answer)
    for prompt_of in (lambda p: f"\n\nHuman: {p}\n\nAssistant:", lambda p: p):
        whole = tmp_path / "whole"
        whole.mkdir(exist_ok=True)
        own_rows = [
            json.loads(line) for line in (own / "preferences.jsonl").read_text().splitlines()
        ]
        _write(whole, "preferences", [
            r | {"prompt": prompt_of(p)} for r, (_, p, _, _) in zip(own_rows, rows, strict=True)
        ])  # fmt: skip
        assert [(i.prompt, i.responses) for i in load_dataset(whole).preferences] == [
            (i.prompt, i.responses) for i in ours.preferences
        ]
    # and a table mixing such rows with plain text prompts is read as text pairs, as before
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    text_rows = [json.loads(line) for line in (hub / "preferences.jsonl").read_text().splitlines()]
    text_rows[0]["prompt"] = rows[0][1]
    _write(mixed, "preferences", text_rows)
    assert load_dataset(mixed).summary["preference_shape"] == "pairwise"


def test_a_template_refusal_of_a_trl_form_row_names_the_column_the_user_wrote(tmp_path):
    # given TRL's conversational prompt-only and prompt/completion tables, one row each with a
    # system turn, and a base model whose chat template refuses a system turn (as Gemma's)
    from instructflow.models.tokenizer import train_tokenizer
    from instructflow.tasks.dataset import DatasetConfig
    from instructflow.tasks.lengths import LengthCheck
    from tests.own_data import REFUSING_TEMPLATE

    tok = train_tokenizer(["Name a fruit. Apple. A car."] * 5, vocab_size=300)
    tok.chat_template = REFUSING_TEMPLATE
    system = [{"role": "system", "content": "Be brief."}]
    folder = tmp_path / "trl"
    folder.mkdir()
    tables = {
        "prompts": [{"prompt": USER}] * 3 + [{"prompt": system + USER}],
        "demonstrations": [{"prompt": USER, "completion": APPLE}] * 3
        + [{"prompt": system + USER, "completion": APPLE}],
        "preferences": [{"prompt": USER, "chosen": APPLE, "rejected": CAR}] * 4,
    }
    for name, rows in tables.items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(TableError) as e:
        load_dataset(folder, DatasetConfig(), LengthCheck(tok, max_len=512, max_new_tokens=8))
    # then each refusal names the fields the file has (it named `messages`, which it has not)
    named = sorted((Path(p.file).name, p.row, p.field) for p in e.value.problems)
    assert named == [
        ("demonstrations.jsonl", 4, "prompt + completion"),
        ("prompts.jsonl", 4, "prompt"),
    ]


@pytest.mark.parametrize(
    "bad_turn, message",
    [
        ({"content": "no role"}, "whose role is not 'system', 'user' or 'assistant'"),
        ({"role": "user", "content": 42}, "whose content is not a string"),
        ({"role": "user", "content": "bell \x07"}, "control character"),
        ({"role": "user", "content": " "}, "its last user turn .* is empty"),
    ],
)
def test_a_bad_turn_in_a_conversational_prompt_is_named_in_prompt_once(tmp_path, bad_turn, message):
    # given TRL conversational preferences whose row 3 has a bad message in its `prompt`
    # (chosen and rejected are fine: they are read as prompt + each answer)
    prefs = _conversational_preferences(60)
    prefs[2]["prompt"] = [{"role": "system", "content": "Be brief."}, bad_turn]
    _write(tmp_path, "preferences", prefs)
    with pytest.raises(TableError, match=message) as e:
        load_dataset(tmp_path)
    # then the problem names the column the user must fix, once: not 'chosen' and
    # 'rejected', which hold no bad message
    assert [(Path(p.file).name, p.row, p.field) for p in e.value.problems] == [
        ("preferences.jsonl", 3, "prompt")
    ]


def test_a_blank_earlier_user_turn_in_a_conversational_prompt_is_named_in_prompt(tmp_path):
    # given TRL conversational preferences whose row 3's `prompt` has a blank first user turn
    prefs = _conversational_preferences(60)
    prefs[2]["prompt"] = [
        {"role": "user", "content": ""},
        {"role": "assistant", "content": "Hi."},
        *prefs[2]["prompt"],
    ]
    _write(tmp_path, "preferences", prefs)
    with pytest.raises(TableError, match="an earlier user turn is empty") as e:
        load_dataset(tmp_path)
    # then it is named once, in the column the user must fix
    assert [(Path(p.file).name, p.row, p.field) for p in e.value.problems] == [
        ("preferences.jsonl", 3, "prompt")
    ]


def test_a_message_list_prompt_beside_text_answers_says_what_the_form_wants(tmp_path):
    # given preferences whose every prompt is a message list and whose answers are text
    rows = _tasks(60)
    prefs = [
        {"prompt": [{"role": "user", "content": p}], "chosen": g, "rejected": b, "user_id": u}
        for u, p, g, b in rows
    ]
    _write(tmp_path, "preferences", prefs)
    # then one problem for the file, in 'prompt', says the answers are messages in that form
    # (not only that the prompt 'must be a string')
    with pytest.raises(TableError, match="while 'chosen' and 'rejected' are text") as e:
        load_dataset(tmp_path)
    assert [(Path(p.file).name, p.row, p.field) for p in e.value.problems] == [
        ("preferences.jsonl", 0, "prompt")
    ]
    # and one such row among conversational ones is named as the mixed-form row it is, once
    convs = _conversational_preferences(60)
    convs[2] = prefs[2]
    _write(tmp_path, "preferences", convs)
    with pytest.raises(TableError) as e:
        load_dataset(tmp_path)
    assert [(p.row, p.field) for p in e.value.problems] == [(3, "chosen"), (3, "rejected")]


def test_text_pairs_holding_their_prompt_with_no_prompt_column_say_how_to_give_it(tmp_path):
    # given TRL's implicit-prompt text form: chosen and rejected each the prompt and an
    # answer, no `prompt` column, not HH-RLHF text
    rows = _tasks(60)
    _write(tmp_path, "preferences", [
        {"chosen": f"{p} {g}", "rejected": f"{p} {b}", "user_id": u} for u, p, g, b in rows
    ])  # fmt: skip
    # then one problem for the file says where the prompt goes (two whole-column problems
    # said only that each side must be messages or HH text)
    with pytest.raises(TableError, match="put the prompt in a 'prompt' column") as e:
        load_dataset(tmp_path)
    assert [(Path(p.file).name, p.row, p.field) for p in e.value.problems] == [
        ("preferences.jsonl", 0, "chosen")
    ]
    assert "TRL's implicit-prompt text form" in str(e.value)


def test_trls_unpaired_preference_form_is_named_when_refused(tmp_path):
    # given TRL's unpaired preference form (KTO's): one answer per row, labelled good or bad
    rows = [
        {
            "prompt": [{"role": "user", "content": p}],
            "completion": [{"role": "assistant", "content": g if i % 2 else b}],
            "label": bool(i % 2),
        }
        for i, (_, p, g, b) in enumerate(_tasks(40))
    ]
    _write(tmp_path, "preferences", rows)
    # then the refusal names the form and says how to give pairs (it said only that the
    # columns fit none of the shapes)
    with pytest.raises(TableError) as e:
        load_dataset(tmp_path)
    (problem,) = e.value.problems
    assert problem.field == "<columns>"
    assert "TRL's unpaired preference form (prompt, completion, label: KTO's)" in problem.message
    assert "as chosen and rejected in one row" in problem.message
