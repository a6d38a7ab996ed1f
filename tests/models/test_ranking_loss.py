"""Tests for the K-wise ranking loss, checked against hand arithmetic and explicit pair loops."""

import math

import pytest
import torch

from instructflow.models.ranking_loss import bias_to_center, kwise_ranking_loss, pairwise_accuracy


def pair_loss(r_w: float, r_l: float) -> float:
    """-log sigmoid(r_w - r_l) written out as log(1 + exp(-(r_w - r_l)))."""
    return math.log(1.0 + math.exp(-(r_w - r_l)))


def prompt_loss_by_loop(rewards: list[float], ranking: list[int]) -> float:
    """One prompt's loss with an explicit loop over the C(K, 2) pairs."""
    ranked = [i for i in ranking if i >= 0]
    losses = [
        pair_loss(rewards[ranked[a]], rewards[ranked[b]])
        for a in range(len(ranked))
        for b in range(a + 1, len(ranked))
    ]
    assert len(losses) == math.comb(len(ranked), 2)
    return sum(losses) / len(losses)


def test_k4_loss_matches_hand_arithmetic() -> None:
    # given: K=4 responses with rewards r = [0.5, 2.0, -1.0, 1.0], ranked best-first 1 > 0 > 3 > 2,
    # so the ranked rewards are 2.0, 0.5, 1.0, -1.0 and the 6 winner-minus-loser margins are
    #   2.0-0.5=1.5, 2.0-1.0=1.0, 2.0+1.0=3.0, 0.5-1.0=-0.5, 0.5+1.0=1.5, 1.0+1.0=2.0
    # log(1+e^-m): 0.20141328 + 0.31326169 + 0.04858735 + 0.97407698 + 0.20141328 + 0.12692801
    #            = 1.86568059; divided by C(4,2)=6 gives 0.31094677.
    rewards = torch.tensor([[0.5, 2.0, -1.0, 1.0]])
    ranking = torch.tensor([[1, 0, 3, 2]])

    # when
    loss = kwise_ranking_loss(rewards, ranking)

    # then
    assert loss.item() == pytest.approx(0.31094677, abs=1e-6)
    six_pairs = [(1, 0), (1, 3), (1, 2), (0, 3), (0, 2), (3, 2)]
    mean_of_pairs = sum(
        pair_loss(rewards[0, win].item(), rewards[0, lose].item()) for win, lose in six_pairs
    )
    assert loss.item() == pytest.approx(mean_of_pairs / 6, abs=1e-6)


def test_mixed_k_is_mean_of_per_prompt_losses() -> None:
    # given: a K=4 prompt and a K=6 prompt in one batch, the first padded to 6 slots
    torch.manual_seed(0)
    rewards = torch.randn(2, 6)
    rewards[0, 4:] = 123.0  # junk in padded slots must be ignored
    ranking = torch.tensor([[2, 0, 3, 1, -1, -1], [5, 1, 0, 4, 2, 3]])
    valid = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])

    # when
    loss = kwise_ranking_loss(rewards, ranking, valid)

    # then: the per-prompt losses (6 and 15 pairs) are averaged, not the 21 pairs pooled
    per_prompt = [prompt_loss_by_loop(rewards[b].tolist(), ranking[b].tolist()) for b in range(2)]
    assert loss.item() == pytest.approx(sum(per_prompt) / 2, abs=1e-6)
    pooled_sum = per_prompt[0] * 6 + per_prompt[1] * 15
    assert loss.item() != pytest.approx(pooled_sum / 21, abs=1e-4)


def test_one_prompt_is_one_batch_element() -> None:
    # given: three prompts with K = 4, 5, 6 and the same batch with its rows permuted
    torch.manual_seed(1)
    rewards = torch.randn(3, 6)
    ranking = torch.tensor(
        [[3, 1, 0, 2, -1, -1], [4, 0, 2, 1, 3, -1], [0, 5, 1, 4, 2, 3]],
    )
    order = torch.tensor([2, 0, 1])

    # when
    batch_loss = kwise_ranking_loss(rewards, ranking)
    permuted_loss = kwise_ranking_loss(rewards[order], ranking[order])
    single_losses = [kwise_ranking_loss(rewards[b : b + 1], ranking[b : b + 1]) for b in range(3)]

    # then: each prompt's loss does not depend on its neighbours, and the batch is their mean
    assert permuted_loss.item() == pytest.approx(batch_loss.item(), abs=1e-6)
    assert batch_loss.item() == pytest.approx(sum(x.item() for x in single_losses) / 3, abs=1e-6)


def test_padded_slots_get_no_gradient() -> None:
    # given: a K=3 prompt padded to 5 slots, with a NaN in a padded reward
    rewards = torch.tensor([[1.0, 0.0, -1.0, float("nan"), 7.0]], requires_grad=True)
    ranking = torch.tensor([[0, 1, 2, -1, -1]])

    # when
    kwise_ranking_loss(rewards, ranking).backward()

    # then
    assert rewards.grad is not None
    assert torch.isfinite(rewards.grad).all()
    assert rewards.grad[0, 3:].abs().sum().item() == 0.0
    # the best response is pushed up, the worst down
    assert rewards.grad[0, 0] < 0 < rewards.grad[0, 2]


def test_valid_that_disagrees_with_ranking_is_rejected() -> None:
    # given: `valid` claims 4 real responses while the ranking lists 3
    rewards = torch.zeros(1, 4)
    ranking = torch.tensor([[0, 1, 2, -1]])
    valid = torch.ones(1, 4, dtype=torch.bool)

    # when / then
    with pytest.raises(ValueError, match="disagree"):
        kwise_ranking_loss(rewards, ranking, valid)


def test_pairwise_accuracy_counts_ties_as_half() -> None:
    # given: prompt 1 as in the K=4 hand example (5 of 6 pairs correctly ordered);
    # prompt 2 has K=3, rewards [1, 1, 0] ranked 0 > 1 > 2: a tie (0.5) and two correct pairs
    rewards = torch.tensor([[0.5, 2.0, -1.0, 1.0], [1.0, 1.0, 0.0, 9.0]])
    ranking = torch.tensor([[1, 0, 3, 2], [0, 1, 2, -1]])

    # when
    accuracy = pairwise_accuracy(rewards, ranking)

    # then: pooled over the 9 pairs, (5 + 0.5 + 2) / 9
    assert accuracy.item() == pytest.approx(7.5 / 9, abs=1e-6)


def test_bias_to_center_gives_zero_mean_demonstrations() -> None:
    # given: reward-model scores of demonstrations, far from 0
    torch.manual_seed(2)
    demo_rewards = torch.randn(1000) * 3.0 + 5.0

    # when
    bias = bias_to_center(demo_rewards)

    # then
    assert isinstance(bias, float)
    assert abs((demo_rewards + bias).mean().item()) < 1e-5


def test_pairwise_accuracy_is_the_exact_share_of_pairs() -> None:
    # given 15 prompts of one pair each, float32 rewards ordering 7 of them right
    rewards = torch.tensor([[1.0, 0.0]] * 7 + [[0.0, 1.0]] * 8, dtype=torch.float32)
    ranking = torch.tensor([[0, 1]] * 15)
    # then the accuracy is 7/15 as a float64, not float32's 0.46666666865348816
    accuracy = float(pairwise_accuracy(rewards, ranking))
    assert accuracy == 7 / 15 and repr(accuracy) == "0.4666666666666667"
