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
