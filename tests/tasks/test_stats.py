import math

import numpy as np

from tasks.stats import bootstrap_ci, mean_with_ci


def test_bootstrap_ci_matches_the_binomial_normal_approximation():
    # given 400 Bernoulli outcomes with 240 successes (p = 0.6)
    values = [1.0] * 240 + [0.0] * 160
    # when the percentile bootstrap CI of the mean is computed
    lo, hi = bootstrap_ci(values, n_resamples=4000, seed=1)
    # then it matches p +- 1.96 * sqrt(p(1-p)/n) = 0.6 +- 0.048 within resampling noise
    half_width = 1.96 * math.sqrt(0.6 * 0.4 / 400)
    assert abs(lo - (0.6 - half_width)) < 0.006
    assert abs(hi - (0.6 + half_width)) < 0.006


def test_ci_covers_the_true_mean_about_95_percent_of_the_time():
    # given many samples of a known Bernoulli(0.3)
    rng = np.random.default_rng(0)
    covered = 0
    for trial in range(200):
        sample = (rng.random(200) < 0.3).astype(float)
        lo, hi = bootstrap_ci(sample, n_resamples=500, seed=trial)
        covered += lo <= 0.3 <= hi
    # then the 95% interval covers 0.3 in roughly 95% of trials
    assert 0.89 <= covered / 200 <= 0.99


def test_mean_with_ci_shape():
    result = mean_with_ci([0.0, 1.0, 1.0, 1.0])
    assert result["mean"] == 0.75
    assert len(result["ci95"]) == 2 and result["ci95"][0] <= 0.75 <= result["ci95"][1]
