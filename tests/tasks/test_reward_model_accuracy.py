import math

import torch

from instructflow.tasks.reward_model import accuracy_vs_scores, accuracy_vs_scores_by_family


def test_accuracy_counts_only_pairs_the_reference_orders():
    # given one row: gold 1.0 > 0.5 = 0.5, and an RM that gets 1 > 0.5 right twice
    # but scores the tied pair apart (which must not count)
    predicted = torch.tensor([[3.0, 1.0, 2.0]])
    gold = torch.tensor([[1.0, 0.5, 0.5]])
    # then 2 of the 2 ordered pairs are right
    assert accuracy_vs_scores(predicted, gold) == 1.0


def test_accuracy_by_family_groups_rows_and_matches_a_hand_count():
    # given three rows of K=3 from two families
    predicted = torch.tensor(
        [
            [2.0, 1.0, 0.0],  # add: gold ranks 0 > 1 > 2, RM agrees on 3 of 3 pairs
            [0.0, 1.0, 2.0],  # larger: gold ranks 0 > 1 > 2, RM reverses all 3 pairs
            [1.0, 0.0, 5.0],  # add: gold 0 > 1 = 2: RM right on (0,1), wrong on (0,2)
        ]
    )
    gold = torch.tensor([[1.0, 0.5, 0.0], [1.0, 0.5, 0.0], [1.0, 0.0, 0.0]])
    families = ["add", "larger", "add"]
    # when accuracy is split by family
    by_family = accuracy_vs_scores_by_family(predicted, gold, families)
    # then add is right on 3 + 1 of 3 + 2 pairs, larger on none of 3, keys sorted by name
    assert list(by_family) == ["add", "larger"]
    assert by_family["add"] == 4 / 5  # exactly: a share of pairs, counted in float64
    assert by_family["larger"] == 0.0
    # and the families together give the overall figure, 4 of 8 pairs
    assert math.isclose(accuracy_vs_scores(predicted, gold), 4 / 8, rel_tol=1e-6)


def test_min_gap_leaves_out_pairs_whose_gold_is_close():
    # given gold 1.0, 0.97, 0.0 and an RM that swaps only the close pair
    predicted = torch.tensor([0.9, 1.0, 0.0])
    gold = torch.tensor([1.0, 0.97, 0.0])
    # then with every pair it is right on 2 of 3, and on 2 of 2 once pairs within 0.05 are left out
    assert math.isclose(accuracy_vs_scores(predicted, gold), 2 / 3, rel_tol=1e-6)
    assert accuracy_vs_scores(predicted, gold, min_gap=0.05) == 1.0


def test_a_family_without_ordered_pairs_is_left_out():
    # given a family whose responses all have the same gold score
    predicted = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    gold = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    # then only the family with a pair to judge is reported (no NaN in the report)
    assert accuracy_vs_scores_by_family(predicted, gold, ["add", "sort"]) == {"add": 1.0}
