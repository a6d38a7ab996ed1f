"""Confidence intervals for the report: percentile bootstrap over test prompts."""

import numpy as np


def bootstrap_ci(
    values, n_resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of `values`."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(n_resamples, data.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    return (float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail)))


def mean_with_ci(values, seed: int = 0) -> dict:
    """{"mean": m, "ci95": [lo, hi]}: the report's shape for an estimated quantity."""
    lo, hi = bootstrap_ci(values, seed=seed)
    return {"mean": float(np.mean(values)) if len(values) else float("nan"), "ci95": [lo, hi]}
