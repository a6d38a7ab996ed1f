"""Simulated users and labelers.

Users submit prompts; each has a skewed taste for some families, as real
users of an API do. Data are split by user, never by prompt.

Labelers rank K responses by the gold score seen through their own noise
(a Plackett-Luce choice with a per-labeler temperature) and bias (a taste
for longer or shorter answers). The same people also write demonstrations:
sometimes verbose, sometimes wrong, which leaves room for a reward model to
find what imitation alone cannot.
"""

import math
import random
from dataclasses import asdict, dataclass

from instructflow.world.gold import words


@dataclass(frozen=True)
class User:
    user_id: str
    split: str
    family_weights: dict[str, float]


@dataclass(frozen=True)
class Labeler:
    labeler_id: str
    pool: str  # "train" labelers make training data; "heldout" ones only evaluate
    # Plackett-Luce temperature on the gold score: higher means noisier rankings.
    noise: float
    # Gold-score points per word added to a response's utility (+: likes long answers).
    length_bias: float
    # How this person writes demonstrations.
    p_verbose: float
    p_wrong: float

    def as_row(self) -> dict:
        return asdict(self)


def make_users(
    rng: random.Random, count: int, families: list[str], split_fractions: dict[str, float]
) -> list[User]:
    """Users with Dirichlet(0.5) family preferences, split train/valid/test by user."""
    users = []
    n_valid = max(2, round(count * split_fractions["valid"]))
    n_test = max(2, round(count * split_fractions["test"]))
    splits = ["valid"] * n_valid + ["test"] * n_test + ["train"] * (count - n_valid - n_test)
    rng.shuffle(splits)
    for i, split in enumerate(splits):
        raw = [rng.gammavariate(0.5, 1.0) + 1e-3 for _ in families]
        total = sum(raw)
        weights = {f: round(w / total, 6) for f, w in zip(families, raw, strict=True)}
        users.append(User(f"u{i:05d}", split, weights))
    return users


# Ranges each labeler's traits are drawn from (uniformly).
NOISE_RANGE = (0.14, 0.24)
LENGTH_BIAS_RANGE = (-0.006, 0.006)
# Demonstration habits: every labeler pads some answers and gets some wrong,
# so SFT imitates both and the comparisons (which notice them) have
# something to teach the reward model.
P_VERBOSE_RANGE = (0.3, 0.7)
P_WRONG_RANGE = (0.1, 0.3)


def make_labelers(rng: random.Random, count: int, pool: str, prefix: str) -> list[Labeler]:
    """A pool of labelers, each with its own noise, length taste and writing habits."""
    return [
        Labeler(
            labeler_id=f"{prefix}{i:02d}",
            pool=pool,
            noise=round(rng.uniform(*NOISE_RANGE), 4),
            length_bias=round(rng.uniform(*LENGTH_BIAS_RANGE), 5),
            p_verbose=round(rng.uniform(*P_VERBOSE_RANGE), 4),
            p_wrong=round(rng.uniform(*P_WRONG_RANGE), 4),
        )
        for i in range(count)
    ]


def _utility(labeler: Labeler, gold: float, response: str) -> float:
    return gold + labeler.length_bias * len(words(response))


def rank(
    labeler: Labeler, rng: random.Random, responses: list[str], golds: list[float]
) -> list[int]:
    """Indices of `responses` best first: a Plackett-Luce draw (Gumbel-max trick).

    Identical responses share one utility, so only the Gumbel noise orders them.
    """
    keys = []
    for response, gold in zip(responses, golds, strict=True):
        gumbel = -math.log(-math.log(max(rng.random(), 1e-12)))
        keys.append(_utility(labeler, gold, response) / labeler.noise + gumbel)
    return sorted(range(len(responses)), key=lambda i: -keys[i])


def prefers_first(
    labeler: Labeler,
    rng: random.Random,
    first: str,
    second: str,
    gold_first: float,
    gold_second: float,
) -> float:
    """1.0 if the labeler prefers `first`, 0.0 if `second`, 0.5 for identical texts.

    For K = 2, Plackett-Luce is the Bradley-Terry (logistic) choice.
    """
    if first.strip() == second.strip():
        return 0.5
    margin = (
        _utility(labeler, gold_first, first) - _utility(labeler, gold_second, second)
    ) / labeler.noise
    return 1.0 if rng.random() < 1.0 / (1.0 + math.exp(-margin)) else 0.0


def likert(labeler: Labeler, rng: random.Random, gold: float) -> int:
    """A 1-7 rating: the gold score seen through the labeler's noise."""
    seen = gold + rng.gauss(0.0, labeler.noise)
    return int(min(7, max(1, round(1 + 6 * seen))))


def pairwise_agreement(
    rankings_a: list[list[int]], rankings_b: list[list[int]], responses: list[list[str]]
) -> float:
    """How often two labelers order a pair of distinct responses the same way.

    Each item is one set of K responses ranked by both labelers; pairs of
    identical texts carry no preference and are skipped.
    """
    agree = total = 0
    for rank_a, rank_b, texts in zip(rankings_a, rankings_b, responses, strict=True):
        pos_a = {idx: p for p, idx in enumerate(rank_a)}
        pos_b = {idx: p for p, idx in enumerate(rank_b)}
        for i in range(len(texts)):
            for j in range(i + 1, len(texts)):
                if texts[i].strip() == texts[j].strip():
                    continue
                total += 1
                agree += (pos_a[i] < pos_a[j]) == (pos_b[i] < pos_b[j])
    return agree / total if total else float("nan")
