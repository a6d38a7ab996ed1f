"""The evaluation harness on generated smoke data with tiny models built from config."""

from models.lm import load_causal_lm
from tasks.evaluation import EvalConfig, Policy, evaluate, head_to_head


def test_win_rate_of_a_policy_against_itself_is_one_half_within_its_ci(tiny_dirs, generated_root):
    # given SFT evaluated against an independent sample of itself
    sft_dir, rm_dir = tiny_dirs
    cfg = EvalConfig(max_prompts=80, max_new_tokens=8)
    rows, raw = evaluate(
        [Policy("sft", sft_dir)], sft_dir, rm_dir, generated_root / "data" / "smoke", cfg, seed=0
    )
    row = rows["sft"]
    # then the win rate's CI contains 0.5 and KL to itself is 0
    lo, hi = row["win_rate_vs_sft"]["ci95"]
    assert lo <= 0.5 <= hi
    assert abs(row["kl_to_sft"]) < 1e-4
    # and every field of the contract's policy row is present
    for field in (
        "gold_score",
        "likert",
        "rm_score",
        "public_suite_accuracy",
        "pretrain_perplexity",
        "per_family",
    ):
        assert field in row
    assert len(raw["sft"]) == 80 * cfg.samples_per_prompt


def test_head_to_head_of_identical_policies_is_even(tiny_dirs, generated_root):
    # given the same checkpoint on both sides
    sft_dir, _ = tiny_dirs
    cfg = EvalConfig(max_prompts=60, max_new_tokens=8)
    match = head_to_head(
        Policy("a", sft_dir),
        Policy("b", sft_dir),
        sft_dir,
        generated_root / "data" / "smoke",
        cfg,
        seed=0,
    )
    # then neither side wins beyond noise, and their public-suite accuracy is the same
    lo, hi = match["win_rate"]["ci95"]
    assert lo <= 0.5 <= hi
    assert match["public_challenger"] == match["public_incumbent"]


def test_fewshot_prefix_shows_demonstrations_in_the_prompt_format(generated_root):
    from tasks.evaluation import fewshot_prefix

    prefix = fewshot_prefix(generated_root / "data" / "smoke", 3)
    assert prefix.count("Q: ") == 3 and prefix.count("\nA: ") == 3


def test_tiny_models_load(tiny_dirs):
    model, tokenizer = load_causal_lm(tiny_dirs[0])
    assert model.num_parameters() > 0 and tokenizer.pad_token_id is not None
