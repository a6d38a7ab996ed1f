"""The pipeline's stages as MLflow names their nested runs (one per stage)."""

STAGES = {
    "data",
    "base_model",
    "sft",
    "comparisons",
    "reward_model",
    "judge",
    "ppo",
    "ppo_ptx",
    "flan",
    "t0",
    "evaluation",
    "registry",
}
