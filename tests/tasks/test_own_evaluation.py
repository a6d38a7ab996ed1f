"""Evaluation on a user's dataset: no gold, win rates from the held-out judge (or none without one)."""

import shutil

from instructflow.models.lm import load_causal_lm
from instructflow.tasks import evaluation
from instructflow.tasks.evaluation import EvalConfig, Policy, sample
from instructflow.tasks.judge import HeldOutJudge
from instructflow.tasks.own_evaluation import evaluate_own
from instructflow.tasks.stats import prompt_mean_with_ci
from instructflow.tasks.tables import write_jsonl
from instructflow.world import layout
from tests.own_data import WORDS


def test_win_rates_are_the_judges_verdicts_against_sft_samples(tiny_dirs, tmp_path):
    sft_dir, rm_dir = tiny_dirs
    judge_dir = tmp_path / "judge"
    shutil.copytree(rm_dir, judge_dir / "model")  # any reward model stands in for a trained judge
    profile = tmp_path / "data"
    prompts = [f"Say the word {w} twice." for w in WORDS[:4]]
    write_jsonl(
        profile / layout.EVAL_TEST,
        [
            {
                "prompt_id": f"p{i}",
                "user_id": f"u{i}",
                "split": "test",
                "family": "default",
                "prompt": p,
            }
            for i, p in enumerate(prompts)
        ],
    )
    cfg = EvalConfig(max_prompts=4, max_new_tokens=4, samples_per_prompt=2, batch_size=8)
    policies = [Policy("sft", sft_dir), Policy("ppo", sft_dir)]

    rows, raw = evaluate_own(policies, sft_dir, rm_dir, profile, cfg, seed=3, judge_dir=judge_dir)
    without, _ = evaluate_own(policies, sft_dir, rm_dir, profile, cfg, seed=3)

    # no gold anywhere; without a judge no win rate rather than the training RM's opinion
    assert all(row["gold_score"] is None for row in rows.values())
    assert without["ppo"]["win_rate_vs_sft"] is None
    # with one: the judge's verdicts on the policy's samples against SFT's reference samples
    repeated, _ = evaluation.load_test_prompts(profile, cfg)
    reference = sample(Policy("sft", sft_dir), repeated, cfg, 3 + 1000).texts
    texts = [item["response"] for item in raw["ppo"]]
    verdicts = HeldOutJudge.load(judge_dir).compare_many(repeated, texts, reference)
    expected = prompt_mean_with_ci(verdicts, cfg.samples_per_prompt, 3)
    assert rows["ppo"]["win_rate_vs_sft"] == expected
    assert load_causal_lm(sft_dir)  # the checkpoint is still readable after evaluation
