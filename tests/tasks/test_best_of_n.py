"""Best-of-n diagnostics: the choice rule by hand, and the table on smoke data with tiny models."""

import pytest
import torch

from instructflow.tasks.best_of_n import best_of_first, best_of_n_table, sample_candidates


def test_best_of_first_n_looks_only_at_the_first_n_candidates():
    scores = torch.tensor([[0.1, 0.9, 0.5, 2.0], [0.3, 0.2, 0.8, 0.0]])
    assert best_of_first(scores, 1) == [0, 0]
    assert best_of_first(scores, 2) == [1, 0]
    assert best_of_first(scores, 3) == [1, 2]
    assert best_of_first(scores, 4) == [3, 2]


def test_best_of_first_rejects_an_n_outside_the_candidates():
    with pytest.raises(ValueError, match="between 1 and 2"):
        best_of_first(torch.zeros(3, 2), 3)


def test_gold_selection_never_loses_to_rm_selection_and_n1_is_a_fair_coin(
    tiny_dirs, generated_root
):
    # given 4 candidates and 3 reference samples per smoke test prompt
    sft_dir, rm_dir = tiny_dirs
    profile = generated_root / "data" / "smoke"
    cands = sample_candidates(sft_dir, rm_dir, profile, 4, 3, 60, seed=0, max_new_tokens=8)
    rows = {(r["n"], r["selector"]): r for r in best_of_n_table(cands, [1, 4], profile, 0)}
    # then choosing by gold gives the best gold score there is among the candidates
    assert rows[(4, "gold")]["gold"] == pytest.approx(float(cands.gold.max(dim=1).values.mean()))
    assert rows[(4, "gold")]["gold"] >= rows[(4, "rm")]["gold"]
    # and with one candidate both selectors take the same sample, which is just another
    # SFT sample: its win rate against SFT has 0.5 inside the CI
    assert rows[(1, "rm")]["gold"] == rows[(1, "gold")]["gold"]
    lo, hi = rows[(1, "rm")]["win_rate_vs_sft"]["ci95"]
    assert lo <= 0.5 <= hi
