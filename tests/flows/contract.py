"""The report contract (DESIGN.md section 4), written out here on purpose rather than
imported from tasks/report.py, so that a field the code drops fails a test."""

from instructflow.tasks.registry_config import RegistryConfig

SEVEN_POLICIES = {"base", "base_fewshot", "flan", "t0", "sft", "ppo", "ppo_ptx"}

POLICY_FIELDS = (
    "gold_score",
    "win_rate_vs_sft",
    "judge_win_rate_vs_sft",
    "likert",
    "rm_score",
    "kl_to_sft",
    "public_suite_accuracy",
    "pretrain_perplexity",
    "per_family",
)

# Where smoke runs register (tests run the smoke profile; real runs' champion is elsewhere).
SMOKE_POLICY, SMOKE_REWARD_MODEL = RegistryConfig().names("smoke")
