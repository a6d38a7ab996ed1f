"""The registry stage's head-to-head says what plays whom before, and the win rate after."""

from pathlib import Path
from types import SimpleNamespace

from instructflow.tasks import evaluation
from instructflow.tasks.evaluation import EvalConfig, Policy


def test_head_to_head_prints_who_plays_whom_then_the_win_rate(monkeypatch, capsys):
    # given 4 test prompts, 2 samples each, and labelers who prefer the challenger 3 times in 4
    cfg = EvalConfig(max_prompts=4, samples_per_prompt=2)
    prompts = [f"q{i}" for i in range(4) for _ in range(2)]
    monkeypatch.setattr(
        evaluation, "load_test_prompts", lambda d, c: (prompts, [p + "-id" for p in prompts])
    )
    monkeypatch.setattr(evaluation.GoldJudge, "load", lambda d: None)
    monkeypatch.setattr(
        evaluation, "sample", lambda policy, ps, c, s: SimpleNamespace(texts=["x"] * len(ps))
    )
    verdicts = iter([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    pool = SimpleNamespace(compare=lambda pid, a, b: next(verdicts))
    monkeypatch.setattr(evaluation.LabelerPool, "load", lambda *a: pool)
    monkeypatch.setattr(evaluation, "read_jsonl", lambda p: [])
    monkeypatch.setattr(evaluation, "load_causal_lm", lambda d: (None, None))
    monkeypatch.setattr(evaluation, "public_suite_accuracy", lambda m, t, s: 0.5)
    # when the challenger plays the champion
    match = evaluation.head_to_head(
        Policy("challenger", Path("c")), Policy("champion", Path("i")), Path("w"), cfg, 0
    )
    # then one line before it starts and one with the win rate when it is done
    low, high = match["win_rate"]["ci95"]
    assert capsys.readouterr().out.splitlines() == [
        "head-to-head: challenger vs champion on 4 test prompts x 2 samples,"
        " judged by held-out labelers",
        f"head-to-head: challenger wins 0.750 vs champion (95% CI {low:.3f}-{high:.3f})",
    ]
