"""What a figure is worth across training seeds: the aggregate of a seed sweep.

A single run's 95% interval resamples test prompts: it says how much the
figure would move with other prompts, not with another training seed. The
sweep's interval resamples both, in the order the figure was made: first
seeds (which policy was trained), then, within each drawn seed, its prompts
(which prompts judged it). The percentile interval of those replicates
covers both sources of noise.
"""

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# Metrics with per-prompt values in the evaluation's responses (the rest are one number per run).
PER_PROMPT_METRICS = ("gold_score", "win_rate_vs_sft")
# Every metric the aggregate carries, per policy: its place in a report's policy row.
METRICS = {
    "gold_score": ("gold_score", "mean"),
    "win_rate_vs_sft": ("win_rate_vs_sft", "mean"),
    "judge_win_rate_vs_sft": ("judge_win_rate_vs_sft", "mean"),  # the held-out judge's verdicts
    "public_suite_accuracy": ("public_suite_accuracy",),
    "likert": ("likert", "mean"),
    "rm_score": ("rm_score", "mean"),
    "kl_to_sft": ("kl_to_sft",),
}


def seed_summary(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (ddof=1; 0 for one seed), min and max over seeds."""
    data = np.asarray(values, dtype=float)
    return {
        "mean": float(data.mean()),
        "sd": float(data.std(ddof=1)) if data.size > 1 else 0.0,
        "min": float(data.min()),
        "max": float(data.max()),
    }


def two_stage_replicates(
    per_seed: Sequence[Sequence[float]], n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Bootstrap replicates of the grand mean: draw seeds with replacement, then each drawn
    seed's prompts with replacement, and average the drawn seeds' prompt means.

    A seed drawn twice gets two independent prompt resamples, as a new seed would.
    """
    groups = [np.asarray(values, dtype=float) for values in per_seed]
    if not groups or any(g.size == 0 for g in groups):
        raise ValueError("every seed needs at least one prompt value")
    n_seeds = len(groups)
    picks = rng.integers(0, n_seeds, size=(n_resamples, n_seeds))
    means = np.empty((n_resamples, n_seeds))
    for seed_index, values in enumerate(groups):
        rows, cols = np.nonzero(picks == seed_index)
        draws = rng.integers(0, values.size, size=(rows.size, values.size))
        means[rows, cols] = values[draws].mean(axis=1)
    return means.mean(axis=1)


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> list[float]:
    tail = (1.0 - level) / 2.0
    return [float(np.quantile(replicates, tail)), float(np.quantile(replicates, 1.0 - tail))]


def seeds_and_prompts_interval(
    per_seed: Sequence[Sequence[float]], n_resamples: int = 4000, seed: int = 0
) -> list[float]:
    """95% percentile interval of the two-stage bootstrap (seeds, then prompts)."""
    rng = np.random.default_rng(seed)
    return percentile_interval(two_stage_replicates(per_seed, n_resamples, rng))


def per_prompt_values(samples: Sequence[Mapping[str, Any]], field: str) -> list[float]:
    """The mean of `field` over each prompt's samples, prompts in order of first appearance."""
    grouped: dict[str, list[float]] = defaultdict(list)
    for row in samples:
        grouped[row["prompt_id"]].append(float(row[field]))
    return [sum(v) / len(v) for v in grouped.values()]


def _lookup(row: Mapping[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = row
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return None if value is None else float(value)


def aggregate(
    reports: Mapping[int, Mapping[str, Any]],
    per_prompt: Mapping[int, Mapping[str, Mapping[str, Sequence[float]]]],
    n_resamples: int = 4000,
) -> dict[str, Any]:
    """The sweep's aggregate from each seed's report and per-prompt values.

    per_prompt[seed][policy][metric] lists that seed's per-prompt means of a
    PER_PROMPT_METRICS metric. For those the interval resamples seeds, then
    prompts; for one-number metrics (public suite, KL, ...) it resamples seeds
    only (`interval_over` says which). `prompt_ci95_halfwidth` is the mean over
    seeds of each run's own prompt-resampling half-width, for comparison.
    """
    seeds = sorted(reports)
    policies = [
        p for p in reports[seeds[0]]["policies"] if all(p in reports[s]["policies"] for s in seeds)
    ]
    out: dict[str, Any] = {}
    for policy in policies:
        rows = {s: reports[s]["policies"][policy] for s in seeds}
        out[policy] = {}
        for metric, path in METRICS.items():
            values = [_lookup(rows[s], path) for s in seeds]
            if any(v is None for v in values):
                continue
            entry: dict[str, Any] = {"per_seed": dict(zip(map(str, seeds), values, strict=True))}
            entry |= seed_summary(values)
            if metric in PER_PROMPT_METRICS:
                groups = [per_prompt[s][policy][metric] for s in seeds]
                entry["ci95"] = seeds_and_prompts_interval(groups, n_resamples)
                entry["interval_over"] = "seeds, then prompts"
                halfwidths = [
                    (rows[s][metric]["ci95"][1] - rows[s][metric]["ci95"][0]) / 2 for s in seeds
                ]
                entry["prompt_ci95_halfwidth"] = float(np.mean(halfwidths))
            else:
                entry["ci95"] = seeds_and_prompts_interval([[v] for v in values], n_resamples)
                entry["interval_over"] = "seeds"
            out[policy][metric] = entry
    rm = {
        name: seed_summary([reports[s]["reward_model"][name] for s in seeds])
        for name in ("accuracy_vs_gold", "accuracy_heldout_labels")
        if all(name in reports[s].get("reward_model", {}) for s in seeds)
    }
    return {"seeds": seeds, "policies": out, "reward_model": rm}


def gate_noise(pairs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The win-rate margin a gate needs to tell a better policy from another seed of the same one.

    `pairs` holds head-to-head win rates between checkpoints of the same
    configuration trained with different seeds; each would be 0.5 without
    noise. The margin is the largest distance from 0.5 seen.
    """
    if not pairs:
        raise ValueError("gate noise needs at least one pair of seeds")
    distances = [abs(p["win_rate"] - 0.5) for p in pairs]
    return {"pairs": list(pairs), "win_margin": float(max(distances))}
