"""base_fewshot's prefix on a user's dataset: as many demonstrations as leave the test prompts
room to sample in the base model's context."""

import json
from pathlib import Path

from instructflow.tasks.fewshot_own import fewshot_prefix_that_fits, fewshot_shortfall
from instructflow.tasks.fewshot_shown import shortfall_text
from instructflow.tasks.lengths import LengthCheck
from instructflow.world import layout


class _Words:
    """A tokenizer of one token a word: lengths easy to count by hand."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [0] * len(text.split())


def _profile(folder: Path) -> Path:
    rows = {
        layout.SFT_TRAIN: [
            {"prompt": f"say {w} twice please", "response": f"{w} {w}", "family": f"f{i}"}
            for i, w in enumerate(["apple", "river", "stone"])
        ],
        layout.EVAL_TEST: [{"prompt": "say cloud twice"}, {"prompt": "a b c d e f g h"}],
    }
    for rel, table in rows.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text("".join(json.dumps(r) + "\n" for r in table))
    return folder


def test_the_fewshot_prefix_keeps_the_demonstrations_that_fit_the_context(tmp_path):
    # given three demonstrations of 8 words each ("Q: say apple twice please\nA: apple apple"),
    # a longest test prompt of 10 ("Q: a b c d e f g h\nA:") and 4 tokens of sampling room
    profile = _profile(tmp_path)
    # then all three are kept where they fit (24 + 10 + 4 = 38), two in one of 37
    assert fewshot_prefix_that_fits(profile, 3, LengthCheck(_Words(), 38, 4))[1] == 3
    prefix, shown = fewshot_prefix_that_fits(profile, 3, LengthCheck(_Words(), 37, 4))
    assert (prefix.count("Q:"), shown) == (2, 2)
    # and none where no demonstration leaves the longest prompt room to sample
    assert fewshot_prefix_that_fits(profile, 3, LengthCheck(_Words(), 21, 4)) == ("", 0)


def _with_demonstrations(folder: Path, rows: list[dict]) -> Path:
    profile = _profile(folder)
    (profile / layout.SFT_TRAIN).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return profile


def test_a_dataset_without_categories_shows_as_many_demonstrations_as_asked(tmp_path):
    # given demonstrations with no category (the dataset's rows all get the family "default")
    rows = [
        {"prompt": f"say {w} twice please", "response": f"{w} {w}", "family": "default"}
        for w in ["apple", "river", "stone"]
    ]
    profile = _with_demonstrations(tmp_path, rows)
    # then the prefix holds the three asked for (it showed one: one per category), no warning
    prefix, shown = fewshot_prefix_that_fits(profile, 3, LengthCheck(_Words(), 100, 4))
    assert (prefix.count("Q:"), shown) == (3, 3)
    assert fewshot_shortfall(profile, 3, shown, 100) == (None, None)


def test_long_answers_are_shown_shortest_first_each_family_before_the_rest(tmp_path):
    # given long answers (all over the embedded world's four words), two families, and
    # a prompt given twice
    def row(prompt, words, family):
        return {"prompt": prompt, "response": " ".join(["w"] * words), "family": family}

    rows = [
        row("p1", 9, "a"),
        row("p2", 7, "a"),
        row("p3", 12, "b"),
        row("p4", 5, "a"),
        row("p4", 5, "a"),
        row("p5", 6, "b"),
    ]
    profile = _with_demonstrations(tmp_path, rows)
    from instructflow.tasks.fewshot_own import own_fewshot_rows

    # then each family's shortest comes first, in the table's family order (a: p4, b: p5),
    # then the shortest others (p2, then p1), each prompt once; the longest (p3) is left out
    assert [r["prompt"] for r in own_fewshot_rows(profile, 4)] == ["p4", "p5", "p2", "p1"]
    # and they are shown (they skipped base_fewshot: no answer had at most 4 words)
    prefix, shown = fewshot_prefix_that_fits(profile, 4, LengthCheck(_Words(), 200, 4))
    assert shown == 4 and prefix.index("Q: p4") < prefix.index("Q: p5") < prefix.index("Q: p2")


def test_fewer_demonstrations_than_asked_are_said_as_such(tmp_path):
    rows = [{"prompt": "say hi", "response": "hi there you", "family": "default"}]
    profile = _with_demonstrations(tmp_path, rows)
    prefix, shown = fewshot_prefix_that_fits(profile, 3, LengthCheck(_Words(), 100, 4))
    block, skip = fewshot_shortfall(profile, 3, shown, 100)
    assert shown == 1 and skip is None
    # the report's block: how many shown, of how many asked, and why
    reason = "the training split holds only 1 prompt with a demonstration"
    assert block == {"shown": 1, "asked": 3, "reason": reason}
    assert shortfall_text(block) == (
        "base_fewshot shows 1 of evaluation.fewshot_examples = 3 demonstrations: the training"
        " split holds only 1 prompt with a demonstration"
    )
    empty = _with_demonstrations(tmp_path, [])
    assert fewshot_shortfall(empty, 3, 0, 100) == (
        None,
        "skipped: the training split holds no demonstration to show",
    )


def test_the_context_s_cut_and_no_room_keep_their_reasons(tmp_path):
    profile = _profile(tmp_path)  # three families of short answers
    assert fewshot_shortfall(profile, 3, 3, 38) == (None, None)
    block, skip = fewshot_shortfall(profile, 3, 2, 37)
    assert skip is None and (block["shown"], block["asked"]) == (2, 3)
    assert shortfall_text(block).startswith(
        "base_fewshot shows 2 of evaluation.fewshot_examples = 3 demonstrations: more leave"
    )
    block, skip = fewshot_shortfall(profile, 3, 0, 21)
    assert block is None and skip.startswith("skipped: not one demonstration leaves")
    # and none asked for is said as such, not as a context too small
    assert fewshot_shortfall(profile, 0, 0, 100) == (
        None,
        "skipped: evaluation.fewshot_examples is 0",
    )


def test_the_embedded_worlds_prefix_short_of_families_is_said_as_such(tmp_path):
    from instructflow.tasks.evaluation import fewshot_prefix
    from instructflow.tasks.evaluation_config import EvalConfig
    from instructflow.tasks.fewshot_shown import world_prefix

    # given the world's rule (one demonstration per family, answers of at most 4 words) and
    # two families with such an answer: the third family's answer is longer
    rows = [
        {"prompt": "p1", "response": "one two", "family": "add"},
        {"prompt": "p2", "response": "one", "family": "add"},
        {"prompt": "p3", "response": "a b c", "family": "sort"},
        {"prompt": "p4", "response": "a b c d e", "family": "reverse"},
    ]
    profile = _with_demonstrations(tmp_path, rows)
    # then asked for 3 it shows 2, and the block says why
    prefix, block = world_prefix(profile, EvalConfig(fewshot_examples=3))
    assert prefix == fewshot_prefix(profile, 3) and "p4" not in prefix
    assert block == {
        "shown": 2,
        "asked": 3,
        "reason": "it shows one per task family whose training demonstrations have an answer of"
        " at most 4 words, and only 2 families have one",
    }
    # and asked for 2 (or none) it shows all: no block
    assert world_prefix(profile, EvalConfig(fewshot_examples=2)) == (
        fewshot_prefix(profile, 2),
        None,
    )
    assert world_prefix(profile, EvalConfig(fewshot_examples=0)) == ("", None)
