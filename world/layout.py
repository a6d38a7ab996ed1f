"""Where each table lives under data/, and which fields it has.

The embedded world writes these files (world/build.py) and a user's dataset
is imported into the same layout (tasks/dataset.py); every later stage reads
them through instructflow.tasks.tables (which validates them with the pandera
schemas in instructflow.tasks.schemas). It lives in world/, the lowest layer,
so both world/ and tasks/ import it without an import against the layers.
Paths are relative to the data directory.
"""

# Prompt tables: prompt_id, user_id, split, family, prompt
SFT_TRAIN = "sft/train.jsonl"  # + response, labeler_id (demonstrations)
SFT_VALID = "sft/valid.jsonl"  # + response, labeler_id
RM_TRAIN = "rm/train.jsonl"  # prompts the SFT model answers K times for comparisons
RM_VALID = "rm/valid.jsonl"
PPO_TRAIN = "ppo/train.jsonl"
PPO_VALID = "ppo/valid.jsonl"
EVAL_TEST = "eval/test.jsonl"  # held-out (test) users' prompts

# Baseline instruction mixtures: example_id, family, prompt, response
FLAN_MIXTURE = "baselines/flan.jsonl"
T0_MIXTURE = "baselines/t0.jsonl"

# Pretraining corpus: doc_id, text
PRETRAIN_TRAIN = "pretrain/train.jsonl"
PRETRAIN_VALID = "pretrain/valid.jsonl"

# Held-out "public NLP" suite: item_id, task, context, choices, answer
PUBLIC_SUITE = "public_suite/test.jsonl"

# People: user_id, split, family_weights / labeler_id, pool, noise, bias...
USERS = "people/users.jsonl"
LABELERS = "people/labelers.jsonl"

# Labeler qualification: comparisons two labelers both ranked (agreement).
LABELER_OVERLAP = "people/overlap_comparisons.jsonl"

# The answer key for the gold judge. Never read by a training stage.
GOLD_KEY = "gold/key.jsonl"

MANIFEST = "manifest.json"  # profile, seed, sizes, world version

PROMPT_TABLES = [SFT_TRAIN, SFT_VALID, RM_TRAIN, RM_VALID, PPO_TRAIN, PPO_VALID, EVAL_TEST]
