"""The comparisons stage's progress lines say which prompts each sampling is for."""

from types import SimpleNamespace

import pandas as pd

from instructflow.tasks import comparisons
from instructflow.tasks.tables import read_jsonl
from instructflow.world import layout

COUNTS = {layout.RM_TRAIN: 3, layout.RM_VALID: 2, layout.EVAL_TEST: 4}


class _Pool:
    rng = SimpleNamespace(random=lambda: 1.0)  # never ranked twice

    def pick(self, exclude=None):
        return SimpleNamespace(labeler_id="L1")

    def rank(self, labeler, prompt_id, responses):
        return list(range(len(responses)))


def _fake_table(path, kind, **_):
    if kind == "prompts":
        n = next(count for rel, count in COUNTS.items() if str(path).endswith(rel))
        split = "test" if str(path).endswith(layout.EVAL_TEST) else "train"
        return pd.DataFrame(
            {
                "prompt_id": [f"p{i}" for i in range(n)],
                "user_id": ["u"] * n,
                "split": [split] * n,
                "prompt": ["hi"] * n,
            }
        )
    return pd.DataFrame(read_jsonl(path))


def test_each_sampling_line_names_its_split(tmp_path, monkeypatch, capsys):
    # given a tiny fake world: 3 RM train, 2 RM valid and 4 held-out test prompts
    monkeypatch.setattr(comparisons, "load_causal_lm", lambda _: (None, None))
    monkeypatch.setattr(
        comparisons,
        "GoldJudge",
        SimpleNamespace(load=lambda _: SimpleNamespace(score=lambda p, r: 0.5)),
    )
    monkeypatch.setattr(comparisons.LabelerPool, "load", lambda *a: _Pool())
    monkeypatch.setattr(
        comparisons, "sample_responses", lambda m, t, prompts, k, *a: [["r"] * k for _ in prompts]
    )
    monkeypatch.setattr(comparisons, "load_table", _fake_table)
    monkeypatch.setattr(comparisons, "pairwise_agreement", lambda *a: 0.0)
    (tmp_path / "comparisons").mkdir()
    # when the comparisons are collected
    comparisons.collect(tmp_path, tmp_path, comparisons.ComparisonsConfig(), 0, tmp_path)
    # then each sampling line names the split it samples for
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("sampling")]
    assert lines == [
        "sampling 6 responses for 3 RM train prompts",
        "sampling 6 responses for 2 RM valid prompts",
        "sampling 6 responses for 4 held-out test prompts",
    ]
