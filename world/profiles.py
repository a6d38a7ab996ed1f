"""How big the embedded world is, per profile.

Reward-model and PPO prompt counts keep InstructGPT's (about 33k and 31k):
`small` is that scale, `tiny` a tenth of it, `smoke` a hundredth. SFT gets
three times the paper's share (39k where it had 13k demonstrations): a
~1M-parameter model learns the skills from 100 demonstrations per family
only partly, and a reward model built on that trunk then judges them barely
better than chance (world v2 sweeps: RM accuracy vs gold 0.73 -> 0.77).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class WorldSize:
    users: int
    countries: int  # countries whose capitals the corpus states
    unknown_countries: int  # names asked about that do not exist in the world
    sft_prompts: int  # demonstrations, train + valid users
    rm_prompts: int  # prompts to sample K responses for and rank
    ppo_prompts: int
    test_prompts: int  # held-out (test) users' prompts for evaluation
    pretrain_docs: int
    pretrain_valid_docs: int
    public_suite_items: int
    train_labelers: int
    heldout_labelers: int
    # RM prompts whose candidates two labelers both rank (agreement check).
    overlap_items: int


PROFILES: dict[str, WorldSize] = {
    "smoke": WorldSize(
        users=40,
        countries=12,
        unknown_countries=6,
        sft_prompts=390,
        rm_prompts=330,
        ppo_prompts=310,
        test_prompts=120,
        pretrain_docs=600,
        pretrain_valid_docs=60,
        public_suite_items=120,
        train_labelers=10,
        heldout_labelers=4,
        overlap_items=120,
    ),
    "tiny": WorldSize(
        users=300,
        countries=30,
        unknown_countries=20,
        sft_prompts=3900,
        rm_prompts=3300,
        ppo_prompts=3100,
        test_prompts=600,
        pretrain_docs=5000,
        pretrain_valid_docs=300,
        public_suite_items=400,
        train_labelers=12,
        heldout_labelers=6,
        overlap_items=400,
    ),
    "small": WorldSize(
        users=2000,
        countries=60,
        unknown_countries=40,
        sft_prompts=39000,
        rm_prompts=33000,
        ppo_prompts=31000,
        test_prompts=2000,
        pretrain_docs=40000,
        pretrain_valid_docs=1000,
        public_suite_items=1000,
        train_labelers=40,
        heldout_labelers=10,
        overlap_items=1500,
    ),
}

# SFT demonstrations per profile, over the paper's share (see the docstring).
SFT_SHARE_FACTOR = 3
SPLIT_FRACTIONS = {"valid": 0.1, "test": 0.1}
WORLD_VERSION = "2"
