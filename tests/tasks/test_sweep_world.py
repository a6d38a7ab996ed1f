"""tasks/sweep_world.py: a report's once-per-run figures summarised over seeds, by hand."""

import pytest

from instructflow.tasks import sweep_world


def _report(agreement: float, rm_add: float, judge_acc: float, trusted: bool) -> dict:
    return {
        "labelers": {"pairwise_agreement": agreement},
        "reward_model": {"accuracy_vs_gold_by_family": {"add": rm_add, "harmful": 0.9}},
        "judge": {
            "accuracy_heldout_pairs": judge_acc,
            "trustworthy": trusted,
            "agreement_with_gold": {"judge": 0.7, "heldout_labelers": 0.8},
            "agreement_within_margin": True,
        },
        "policies": {
            "sft": {"per_family": {"add": {"gold_score": rm_add / 2}, "sort": {"gold_score": 0.1}}},
            # seed 1's ppo has no per-family block: ppo is left out, not averaged over one seed
            **({"ppo": {"per_family": {"add": {"gold_score": 0.5}}}} if agreement < 0.75 else {}),
        },
    }


def test_world_figures_keep_each_seed_beside_the_summary():
    # given two seeds
    world = sweep_world.world_figures(
        {0: _report(0.7, 0.6, 0.55, False), 1: _report(0.8, 0.8, 0.65, True)}
    )
    # then each figure has per-seed values and mean, sd, min, max worked out by hand
    rm_add = world["reward_model_by_family"]["add"]
    assert rm_add["per_seed"] == {"0": 0.6, "1": 0.8}
    # sd of (0.6, 0.8) with ddof=1: sqrt(2 * 0.1^2 / 1) = 0.1414
    assert (rm_add["mean"], rm_add["sd"], rm_add["min"], rm_add["max"]) == pytest.approx(
        (0.7, 0.14142, 0.6, 0.8), abs=1e-5
    )
    assert world["labelers_pairwise_agreement"]["mean"] == pytest.approx(0.75)
    assert world["judge"]["accuracy_heldout_pairs"]["per_seed"] == {"0": 0.55, "1": 0.65}
    assert world["judge"]["agreement_heldout_labelers"]["mean"] == pytest.approx(0.8)
    # yes/no verdicts stay per seed
    assert world["judge"]["trustworthy"] == {"0": False, "1": True}
    assert world["judge"]["agreement_within_margin"] == {"0": True, "1": True}
    assert world["gold_by_family"]["sft"]["add"]["per_seed"] == {"0": 0.3, "1": 0.4}
    assert "ppo" not in world["gold_by_family"]


def test_a_figure_missing_in_one_seed_is_left_out():
    first, second = _report(0.7, 0.6, 0.55, False), _report(0.7, 0.6, 0.55, False)
    del second["labelers"]
    del second["judge"]["trustworthy"]
    del second["reward_model"]["accuracy_vs_gold_by_family"]["harmful"]
    world = sweep_world.world_figures({0: first, 1: second})
    assert "labelers_pairwise_agreement" not in world
    assert "trustworthy" not in world["judge"]
    assert list(world["reward_model_by_family"]) == ["add"]


def test_world_lines_show_mean_and_seed_range_per_family():
    from instructflow.tasks.sweep_report import world_lines

    world = sweep_world.world_figures(
        {0: _report(0.7, 0.6, 0.55, False), 1: _report(0.8, 0.8, 0.65, True)}
    )
    text = "\n".join(world_lines({"world": world, "reward_model": {}}))
    # add: RM 0.6 and 0.8; SFT gold 0.3 and 0.4; ppo is not in both seeds
    assert "| family | RM accuracy vs gold | sft gold |\n" in text
    assert "| add | 0.700 [0.600, 0.800] | 0.350 [0.300, 0.400] |" in text
    assert "| sort | - | 0.100 [0.100, 0.100] |" in text
    assert "trustworthy (>= 0.6) in 1/2 seeds" in text
    assert "within 0.10 of the labelers in 2/2 seeds" in text
