import math

import numpy as np
import pytest

from instructflow.tasks.stats import (
    bootstrap_ci,
    mean_with_ci,
    per_prompt_means,
    prompt_mean_with_ci,
    standard_error,
)


def test_bootstrap_ci_matches_the_binomial_normal_approximation():
    # given 400 Bernoulli outcomes with 240 successes (p = 0.6)
    values = [1.0] * 240 + [0.0] * 160
    # when the percentile bootstrap CI of the mean is computed
    lo, hi = bootstrap_ci(values, n_resamples=4000, seed=1)
    # then it matches p +- 1.96 * sqrt(p(1-p)/n) = 0.6 +- 0.048 within resampling noise
    half_width = 1.96 * math.sqrt(0.6 * 0.4 / 400)
    assert abs(lo - (0.6 - half_width)) < 0.006
    assert abs(hi - (0.6 + half_width)) < 0.006


def test_bootstrap_ci_of_the_median_follows_its_exact_resampling_distribution():
    # given [0, 1, 2]: a resample's median is 0 when two or three of its three draws are 0,
    # P = 3 (1/3)^2 (2/3) + (1/3)^3 = 7/27 = 0.26; likewise 2; and 1 with P = 13/27
    values = [0.0, 1.0, 2.0]

    # when the percentile bootstrap CI of the median is taken
    def ci(level):
        return bootstrap_ci(values, n_resamples=20000, seed=3, level=level, statistic=np.median)

    # then the 5th and 95th percentiles fall in the outer masses (0.05 and 0.95 beyond 0.26
    # of either tail), and the 30th and 70th in the middle one (0.30 > 0.26, 0.70 < 0.74)
    assert ci(0.90) == (0.0, 2.0)
    assert ci(0.40) == (1.0, 1.0)


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


def test_per_prompt_means_average_consecutive_samples():
    # given two prompts with three samples each
    values = [1.0, 0.0, 0.5, 0.0, 0.0, 1.0]
    # then each prompt's value is the mean of its own three
    assert per_prompt_means(values, 3) == pytest.approx([0.5, 1 / 3])


def test_per_prompt_means_refuses_a_ragged_count():
    with pytest.raises(ValueError, match="groups of 3"):
        per_prompt_means([1.0, 0.0], 3)


def test_repeated_identical_samples_do_not_narrow_the_ci():
    # given 100 prompts whose three samples always agree (no sampling noise at all)
    rng = np.random.default_rng(3)
    outcomes = (rng.random(100) < 0.6).astype(float)
    repeated = np.repeat(outcomes, 3)
    # then resampling prompts gives the same CI as one sample per prompt: the
    # copies carry no new evidence, and a naive bootstrap over 300 values would be
    # sqrt(3) times too narrow
    clustered = prompt_mean_with_ci(repeated, 3, seed=5)["ci95"]
    single = mean_with_ci(outcomes, seed=5)["ci95"]
    assert clustered == pytest.approx(single)
    naive_lo, naive_hi = bootstrap_ci(repeated, seed=5)
    assert (naive_hi - naive_lo) < 0.7 * (single[1] - single[0])


def test_standard_error_by_hand() -> None:
    # values 1, 2, 3, 4: sample sd = sqrt(5/3), so s.e. = sqrt(5/3) / 2
    assert standard_error([1.0, 2.0, 3.0, 4.0]) == pytest.approx(math.sqrt(5 / 3) / 2)
    assert standard_error([0.7]) == 0.0
