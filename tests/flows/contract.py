"""The report contract (DESIGN.md section 4), written out here on purpose rather than
imported from tasks/report.py, so that a field the code drops fails a test."""

SEVEN_POLICIES = {"base", "base_fewshot", "flan", "t0", "sft", "ppo", "ppo_ptx"}

POLICY_FIELDS = (
    "gold_score",
    "win_rate_vs_sft",
    "likert",
    "rm_score",
    "kl_to_sft",
    "public_suite_accuracy",
    "pretrain_perplexity",
    "per_family",
)
