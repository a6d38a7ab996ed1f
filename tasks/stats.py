"""Confidence intervals for the report: percentile bootstrap over test prompts."""

import numpy as np


def bootstrap_ci(
    values, n_resamples: int = 2000, seed: int = 0, level: float = 0.95, statistic=np.mean
) -> tuple[float, float]:
    """Percentile bootstrap CI of `statistic` (the mean; np.median, say) of `values`."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    resampled = statistic(data[rng.integers(0, data.size, size=(n_resamples, data.size))], axis=1)
    tail = (1.0 - level) / 2.0
    return (float(np.quantile(resampled, tail)), float(np.quantile(resampled, 1.0 - tail)))


def standard_error(values) -> float:
    """Standard error of the mean of `values` (0 for fewer than two)."""
    data = np.asarray(values, dtype=float)
    if data.size < 2:
        return 0.0
    return float(data.std(ddof=1) / np.sqrt(data.size))


def mean_with_ci(values, seed: int = 0) -> dict:
    """{"mean": m, "ci95": [lo, hi]}: the report's shape for an estimated quantity."""
    lo, hi = bootstrap_ci(values, seed=seed)
    return {"mean": float(np.mean(values)) if len(values) else float("nan"), "ci95": [lo, hi]}


def per_prompt_means(values, samples_per_prompt: int) -> list[float]:
    """Average the consecutive samples of each prompt.

    Samples of one prompt share the prompt's difficulty, so they are not
    independent; the bootstrap resamples prompts, not samples.
    """
    data = np.asarray(values, dtype=float)
    if data.size % samples_per_prompt:
        raise ValueError(f"{data.size} values do not split into groups of {samples_per_prompt}")
    return data.reshape(-1, samples_per_prompt).mean(axis=1).tolist()


def prompt_mean_with_ci(values, samples_per_prompt: int, seed: int = 0) -> dict:
    """mean_with_ci over prompts, for `samples_per_prompt` consecutive values per prompt."""
    return mean_with_ci(per_prompt_means(values, samples_per_prompt), seed)
