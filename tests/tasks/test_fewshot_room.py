"""base_fewshot's prefix on a user's dataset: as many demonstrations as leave the test prompts
room to sample in the base model's context."""

import json
from pathlib import Path

from instructflow.tasks.lengths import LengthCheck, fewshot_prefix_that_fits
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


def test_a_dataset_without_categories_shows_one_demonstration_and_says_why(tmp_path):
    from instructflow.tasks.lengths import fewshot_shortfall

    # given demonstrations with no category (the dataset's rows all get the family "default")
    rows = [
        {"prompt": f"say {w} twice please", "response": f"{w} {w}", "family": "default"}
        for w in ["apple", "river", "stone"]
    ]
    profile = _with_demonstrations(tmp_path, rows)
    # then the prefix holds one, and says one (it said 3: the count asked, not shown)
    prefix, shown = fewshot_prefix_that_fits(profile, 3, LengthCheck(_Words(), 100, 4))
    assert (prefix.count("Q:"), shown) == (1, 1)
    # and the warning names the rule, not the context (which had room for all three)
    warning, skip = fewshot_shortfall(profile, 3, shown, 100)
    assert skip is None
    assert warning.startswith("base_fewshot shows 1 of evaluation.fewshot_examples = 3")
    assert "one per category" in warning and "at most 4 words" in warning
    assert warning.endswith("and only 1 category has one")


def test_long_answers_skip_base_fewshot_for_their_length_not_the_context(tmp_path):
    from instructflow.tasks.lengths import fewshot_shortfall

    # given demonstrations whose responses are all longer than base_fewshot takes
    rows = [
        {"prompt": f"describe {w}", "response": f"{w} is a word of some kind", "family": f"f{i}"}
        for i, w in enumerate(["apple", "river", "stone"])
    ]
    profile = _with_demonstrations(tmp_path, rows)
    assert fewshot_prefix_that_fits(profile, 3, LengthCheck(_Words(), 100, 4)) == ("", 0)
    # then the skip says so (it said no demonstration left a test prompt room in the context)
    assert fewshot_shortfall(profile, 3, 0, 100) == (
        None,
        "skipped: no training demonstration has a response of at most 4 words"
        " (base_fewshot's few-shot prompt shows short answers, one per category)",
    )


def test_the_context_s_cut_and_no_room_keep_their_reasons(tmp_path):
    from instructflow.tasks.lengths import fewshot_shortfall

    profile = _profile(tmp_path)  # three families of short answers
    assert fewshot_shortfall(profile, 3, 3, 38) == (None, None)
    warning, skip = fewshot_shortfall(profile, 3, 2, 37)
    assert skip is None and warning.startswith("base_fewshot shows 2 demonstrations: more leave")
    warning, skip = fewshot_shortfall(profile, 3, 0, 21)
    assert warning is None and skip.startswith("skipped: not one demonstration leaves")
    # and none asked for is said as such, not as a context too small
    assert fewshot_shortfall(profile, 0, 0, 100) == (
        None,
        "skipped: evaluation.fewshot_examples is 0",
    )
