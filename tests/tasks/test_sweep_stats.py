"""The seed sweep's aggregation against values worked out by hand."""

import numpy as np
import pytest

from instructflow.tasks import sweep_stats


def test_seed_summary_by_hand():
    # given three seeds' figures
    summary = sweep_stats.seed_summary([0.5, 0.6, 0.7])
    # then mean 0.6, sample sd sqrt(((-.1)^2 + 0 + .1^2) / 2) = 0.1, range 0.5-0.7
    assert summary == pytest.approx({"mean": 0.6, "sd": 0.1, "min": 0.5, "max": 0.7})
    assert sweep_stats.seed_summary([0.3])["sd"] == 0.0


def test_two_stage_bootstrap_matches_the_hand_worked_distribution():
    # given seed A with prompt values [0, 1] and seed B with [1, 1]
    # each drawn seed's resampled mean m is: B -> 1 (p 1/2); A -> 0, .5, 1 (p 1/8, 1/4, 1/8)
    # so P(m=1)=5/8, P(m=.5)=1/4, P(m=0)=1/8, and the replicate (m1+m2)/2 over two
    # independent draws takes 0, .25, .5, .75, 1 with probabilities 1, 4, 14, 20, 25 (/64)
    reps = sweep_stats.two_stage_replicates([[0, 1], [1, 1]], 64_000, np.random.default_rng(3))
    expected = {0.0: 1 / 64, 0.25: 4 / 64, 0.5: 14 / 64, 0.75: 20 / 64, 1.0: 25 / 64}
    for value, probability in expected.items():
        share = np.mean(np.isclose(reps, value))
        # 4 standard errors of a proportion at n = 64,000
        assert share == pytest.approx(probability, abs=4 * np.sqrt(probability / 64_000))
    assert set(np.round(reps, 6)) <= set(expected)


def test_prompt_constant_seeds_reduce_to_a_bootstrap_over_seeds():
    # given two seeds whose prompts all agree (0 and 1): only the seed draw varies,
    # so replicates are 0, .5, 1 with probabilities 1/4, 1/2, 1/4 and the 95% interval is [0, 1]
    reps = sweep_stats.two_stage_replicates([[0, 0, 0], [1, 1]], 20_000, np.random.default_rng(0))
    assert np.mean(reps == 0.5) == pytest.approx(0.5, abs=0.02)
    assert sweep_stats.percentile_interval(reps) == [0.0, 1.0]


def test_the_sweep_interval_is_wider_than_one_seeds_prompt_interval():
    # given three seeds that disagree far more than their prompts do
    rng = np.random.default_rng(1)
    per_seed = [list(rng.normal(centre, 0.05, 200)) for centre in (0.4, 0.5, 0.6)]
    low, high = sweep_stats.seeds_and_prompts_interval(per_seed)
    # then the interval spans most of the seed spread, not the 0.01-wide prompt noise
    assert low < 0.45 and high > 0.55


def test_per_prompt_values_average_each_prompts_samples_in_order():
    rows = [
        {"prompt_id": "b", "win": 1},
        {"prompt_id": "b", "win": 0},
        {"prompt_id": "a", "win": 1},
        {"prompt_id": "a", "win": 1},
    ]
    assert sweep_stats.per_prompt_values(rows, "win") == [0.5, 1.0]


def _report(win: float, gold: float, public: float) -> dict:
    return {
        "policies": {
            "sft": {
                "win_rate_vs_sft": {"mean": win, "ci95": [win - 0.1, win + 0.1]},
                "gold_score": {"mean": gold, "ci95": [gold - 0.2, gold + 0.2]},
                "public_suite_accuracy": public,
                "likert": {"mean": 4.0},
                "rm_score": {"mean": 0.0},
                "kl_to_sft": 0.0,
            }
        },
        "reward_model": {"accuracy_vs_gold": gold, "accuracy_heldout_labels": 0.6},
    }


def test_aggregate_has_every_statistic_for_each_policy_metric():
    # given three seeds' reports and per-prompt values
    reports = {0: _report(0.4, 0.5, 0.3), 1: _report(0.5, 0.6, 0.4), 2: _report(0.6, 0.7, 0.5)}
    per_prompt = {
        s: {"sft": {"win_rate_vs_sft": [w, w], "gold_score": [g]}}
        for s, (w, g) in {0: (0.4, 0.5), 1: (0.5, 0.6), 2: (0.6, 0.7)}.items()
    }
    agg = sweep_stats.aggregate(reports, per_prompt, n_resamples=500)
    win = agg["policies"]["sft"]["win_rate_vs_sft"]
    # then mean, sd, min, max are the seeds' (by hand: 0.5, 0.1, 0.4, 0.6)
    assert (win["mean"], win["sd"], win["min"], win["max"]) == pytest.approx((0.5, 0.1, 0.4, 0.6))
    assert win["per_seed"] == {"0": 0.4, "1": 0.5, "2": 0.6}
    # and the run's own prompt interval is set beside it (half-width 0.1 in every seed)
    assert win["prompt_ci95_halfwidth"] == pytest.approx(0.1)
    assert win["interval_over"] == "seeds, then prompts"
    assert 0.4 <= win["ci95"][0] <= win["ci95"][1] <= 0.6
    public = agg["policies"]["sft"]["public_suite_accuracy"]
    assert public["interval_over"] == "seeds" and public["mean"] == pytest.approx(0.4)
    assert agg["reward_model"]["accuracy_vs_gold"]["max"] == pytest.approx(0.7)


def test_gate_noise_is_the_largest_distance_from_a_coin_flip():
    pairs = [{"seeds": [0, 1], "win_rate": 0.53}, {"seeds": [0, 2], "win_rate": 0.44}]
    assert sweep_stats.gate_noise(pairs)["win_margin"] == pytest.approx(0.06)
    with pytest.raises(ValueError):
        sweep_stats.gate_noise([])
