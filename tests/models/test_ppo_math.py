"""Tests for the PPO / PPO-ptx math, against hand arithmetic and independent loop implementations."""

import math
import statistics

import pytest
import torch
import torch.nn.functional as F

from instructflow.models.ppo_math import (
    AdaptiveKLController,
    FixedKLController,
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    gae,
    kl_penalty_rewards,
    lm_loss,
    logprobs_of,
    masked_mean,
    masked_var,
    masked_whiten,
    ptx_mixed_loss,
)

# ---------------------------------------------------------------- masked statistics


def test_masked_mean_and_var_ignore_padding() -> None:
    # given: valid values 1, 2, 3 in row 0 and 5 in row 1; padding holds junk (including inf)
    x = torch.tensor([[1.0, 2.0, 3.0], [5.0, float("inf"), 100.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])

    # when / then: mean (1+2+3+5)/4 = 2.75; per row 2 and 5
    assert masked_mean(x, mask).item() == pytest.approx(2.75)
    assert masked_mean(x, mask, dim=1).tolist() == pytest.approx([2.0, 5.0])
    # squared deviations from 2.75: 3.0625 + 0.5625 + 0.0625 + 5.0625 = 8.75
    assert masked_var(x, mask, unbiased=False).item() == pytest.approx(8.75 / 4)
    assert masked_var(x, mask).item() == pytest.approx(8.75 / 3)


def test_whitening_gives_zero_mean_unit_variance_and_leaves_padding_unchanged() -> None:
    # given: ragged rows with padding holding 42
    torch.manual_seed(0)
    x = torch.randn(3, 6) * 4.0 + 3.0
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
    x = torch.where(mask.bool(), x, torch.full_like(x, 42.0))

    # when
    whitened = masked_whiten(x, mask)
    unshifted = masked_whiten(x, mask, shift_mean=False)

    # then: statistics over the valid entries only, computed with the statistics module
    valid = [whitened[b, t].item() for b in range(3) for t in range(6) if mask[b, t]]
    assert statistics.fmean(valid) == pytest.approx(0.0, abs=1e-6)
    assert statistics.variance(valid) == pytest.approx(1.0, abs=1e-5)
    assert (whitened[~mask.bool()] == 42.0).all()
    # shift_mean=False keeps the original mean
    original = [x[b, t].item() for b in range(3) for t in range(6) if mask[b, t]]
    kept = [unshifted[b, t].item() for b in range(3) for t in range(6) if mask[b, t]]
    assert statistics.fmean(kept) == pytest.approx(statistics.fmean(original), abs=1e-5)
    assert statistics.variance(kept) == pytest.approx(1.0, abs=1e-5)


# ---------------------------------------------------------------- rewards and GAE


def test_kl_penalty_rewards_places_score_on_last_valid_token() -> None:
    # given: rows of length 3, 2 and 1 padded to 4; beta = 0.1
    logprobs = torch.tensor(
        [[-1.0, -2.0, -0.5, -9.0], [-0.3, -1.2, -5.0, -5.0], [-0.7, -3.0, -3.0, -3.0]]
    )
    ref_logprobs = torch.tensor(
        [[-1.5, -1.0, -0.5, -1.0], [-0.1, -1.2, -1.0, -1.0], [-0.2, -1.0, -1.0, -1.0]]
    )
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]])
    rm_score = torch.tensor([2.0, -1.0, 0.5])

    # when
    rewards, kl = kl_penalty_rewards(rm_score, logprobs, ref_logprobs, mask, beta=0.1)

    # then: kl = logprobs - ref on valid tokens, 0 on padding
    expected_kl = [[0.5, -1.0, 0.0, 0.0], [-0.2, 0.0, 0.0, 0.0], [-0.5, 0.0, 0.0, 0.0]]
    assert kl.tolist() == [pytest.approx(row) for row in expected_kl]
    # rewards = -0.1 * kl, plus the score on the last valid token (index 2, 1 and 0)
    expected_rewards = [
        [-0.05, 0.1, 0.0 + 2.0, 0.0],
        [0.02, 0.0 - 1.0, 0.0, 0.0],
        [0.05 + 0.5, 0.0, 0.0, 0.0],
    ]
    assert rewards.tolist() == [pytest.approx(row) for row in expected_rewards]


def test_gae_three_step_hand_example() -> None:
    # given: gamma=1, lam=0.5, rewards [0, 0, 1], values [0.5, 0.4, 0.8], one padding step
    rewards = torch.tensor([[0.0, 0.0, 1.0, 5.0]])
    values = torch.tensor([[0.5, 0.4, 0.8, 7.0]])
    mask = torch.tensor([[1, 1, 1, 0]])

    # when
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=0.5)

    # then: deltas  d2 = 1 + 0 - 0.8 = 0.2 (terminal), d1 = 0 + 0.8 - 0.4 = 0.4, d0 = 0 + 0.4 - 0.5 = -0.1
    #       A2 = 0.2, A1 = 0.4 + 0.5 * 0.2 = 0.5, A0 = -0.1 + 0.5 * 0.5 = 0.15, padding 0
    assert advantages.tolist() == [pytest.approx([0.15, 0.5, 0.2, 0.0])]
    # returns = A + V
    assert returns[0, :3].tolist() == pytest.approx([0.65, 0.9, 1.0])


def gae_by_forward_sums(
    rewards: list[float], values: list[float], length: int, gamma: float, lam: float
) -> list[float]:
    """A_t = sum_k (gamma * lam)^k * delta_{t+k}, summed forwards for each t (no recursion)."""

    def delta(s: int) -> float:
        next_value = values[s + 1] if s + 1 < length else 0.0
        return rewards[s] + gamma * next_value - values[s]

    advantages = [
        sum((gamma * lam) ** k * delta(t + k) for k in range(length - t)) for t in range(length)
    ]
    return advantages + [0.0] * (len(rewards) - length)


def test_gae_matches_independent_loop_on_ragged_batch() -> None:
    # given: random rewards and values, rows of length 7, 3, 1 and 5
    torch.manual_seed(3)
    rewards = torch.randn(4, 7, dtype=torch.float64)
    values = torch.randn(4, 7, dtype=torch.float64)
    lengths = [7, 3, 1, 5]
    mask = torch.tensor([[1] * n + [0] * (7 - n) for n in lengths])

    # when
    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=0.8)

    # then
    for b, n in enumerate(lengths):
        expected = gae_by_forward_sums(rewards[b].tolist(), values[b].tolist(), n, 0.9, 0.8)
        assert advantages[b].tolist() == pytest.approx(expected, abs=1e-10)
    assert torch.allclose(returns, advantages + values)


# ---------------------------------------------------------------- PPO losses


def test_policy_loss_inside_clip_range_is_plain_surrogate() -> None:
    # given: ratio 1.1 (inside [0.8, 1.2]) and advantage 2
    logprobs = torch.tensor([[math.log(1.1)]], requires_grad=True)
    old_logprobs = torch.zeros(1, 1)
    advantages = torch.tensor([[2.0]])
    mask = torch.ones(1, 1)

    # when
    loss, clipfrac, approx_kl = clipped_policy_loss(logprobs, old_logprobs, advantages, mask)
    loss.backward()

    # then: loss = -2 * 1.1; d loss / d logprob = -A * ratio = -2.2
    assert loss.item() == pytest.approx(-2.2)
    assert logprobs.grad is not None
    assert logprobs.grad.item() == pytest.approx(-2.2)
    assert clipfrac.item() == 0.0
    # k3: (1.1 - 1) - log 1.1 = 0.1 - 0.0953102 = 0.0046898
    assert approx_kl.item() == pytest.approx(0.0046898, abs=1e-6)


def test_policy_loss_is_clipped_above_with_positive_advantage() -> None:
    # given: ratio 1.5 and advantage 1
    logprobs = torch.tensor([[math.log(1.5)]], requires_grad=True)

    # when
    loss, clipfrac, approx_kl = clipped_policy_loss(
        logprobs, torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1)
    )
    loss.backward()

    # then: max(-1.5, -1.2) = -1.2, a constant, so no gradient
    assert loss.item() == pytest.approx(-1.2)
    assert logprobs.grad is not None
    assert logprobs.grad.item() == 0.0
    assert clipfrac.item() == 1.0
    # k3: 0.5 - log 1.5 = 0.5 - 0.4054651 = 0.0945349
    assert approx_kl.item() == pytest.approx(0.0945349, abs=1e-6)


def test_policy_loss_is_clipped_below_with_negative_advantage() -> None:
    # given: ratio 0.5 and advantage -1
    logprobs = torch.tensor([[math.log(0.5)]], requires_grad=True)

    # when
    loss, clipfrac, _ = clipped_policy_loss(
        logprobs, torch.zeros(1, 1), -torch.ones(1, 1), torch.ones(1, 1)
    )
    loss.backward()

    # then: max(1 * 0.5, 1 * 0.8) = 0.8, clipped: no gradient
    assert loss.item() == pytest.approx(0.8)
    assert logprobs.grad is not None
    assert logprobs.grad.item() == 0.0
    assert clipfrac.item() == 1.0


def test_policy_loss_below_with_positive_advantage_keeps_gradient() -> None:
    # given: ratio 0.5 and advantage 1: the pessimistic term is the unclipped one
    logprobs = torch.tensor([[math.log(0.5)]], requires_grad=True)

    # when
    loss, _, _ = clipped_policy_loss(
        logprobs, torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1)
    )
    loss.backward()

    # then: max(-0.5, -0.8) = -0.5, gradient -A * ratio = -0.5
    assert loss.item() == pytest.approx(-0.5)
    assert logprobs.grad is not None
    assert logprobs.grad.item() == pytest.approx(-0.5)


def test_policy_loss_statistics_are_masked_means() -> None:
    # given: the three cases above in one row plus a padding token with an extreme ratio
    logprobs = torch.tensor([[math.log(1.1), math.log(1.5), math.log(0.5), 10.0]])
    advantages = torch.tensor([[2.0, 1.0, -1.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])

    # when
    loss, clipfrac, approx_kl = clipped_policy_loss(logprobs, torch.zeros(1, 4), advantages, mask)

    # then: loss (-2.2 - 1.2 + 0.8) / 3; 2 of 3 tokens clipped;
    # k3 for ratio 0.5: -0.5 - log 0.5 = 0.1931472
    assert loss.item() == pytest.approx(-2.6 / 3)
    assert clipfrac.item() == pytest.approx(2 / 3)
    assert approx_kl.item() == pytest.approx((0.0046898 + 0.0945349 + 0.1931472) / 3, abs=1e-6)


def test_clipped_value_loss_by_hand() -> None:
    # given: clip range 0.2, one padding token
    values = torch.tensor([[1.0, 0.0, 2.0, 50.0]])
    old_values = torch.tensor([[0.5, 0.5, 2.0, 0.0]])
    returns = torch.tensor([[2.0, 1.0, 2.5, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0]])

    # when
    loss, clipfrac = clipped_value_loss(values, old_values, returns, mask, clip_range=0.2)

    # then: token 0: v_clip = 0.7, max((1-2)^2, (0.7-2)^2) = max(1, 1.69) = 1.69
    #       token 1: v_clip = 0.3, max((0-1)^2, (0.3-1)^2) = max(1, 0.49) = 1
    #       token 2: v_clip = 2.0, max(0.25, 0.25) = 0.25
    #       loss = 0.5 * (1.69 + 1 + 0.25) / 3 = 0.49; tokens 0 and 1 moved by more than 0.2
    assert loss.item() == pytest.approx(0.49)
    assert clipfrac.item() == pytest.approx(2 / 3)


# ---------------------------------------------------------------- PPO-ptx


def test_ptx_gamma_zero_is_exactly_ppo_loss() -> None:
    # given
    ppo_loss = torch.tensor(1.2345678)

    # when / then: with or without a ptx loss, not even a float round-off
    assert ptx_mixed_loss(ppo_loss, None, 0.0) is ppo_loss
    assert ptx_mixed_loss(ppo_loss, torch.tensor(float("nan")), 0.0) is ppo_loss


def test_ptx_gamma_half_by_hand() -> None:
    # given / when: 1.2 + 0.5 * 3.0
    mixed = ptx_mixed_loss(torch.tensor(1.2), torch.tensor(3.0), 0.5)

    # then
    assert mixed.item() == pytest.approx(2.7)


def test_ptx_gradient_reaches_pretraining_params_only_when_gamma_positive() -> None:
    # given: separate parameters behind the PPO loss and the pretraining LM loss
    ppo_param = torch.tensor(2.0, requires_grad=True)
    ptx_param = torch.tensor(3.0, requires_grad=True)

    # when: gamma = 0
    ptx_mixed_loss(ppo_param * 1.0, ptx_param**2, 0.0).backward()

    # then: nothing flows into the pretraining branch
    assert ppo_param.grad is not None and ppo_param.grad.item() == 1.0
    assert ptx_param.grad is None

    # when: gamma = 0.5
    ptx_mixed_loss(ppo_param * 1.0, ptx_param**2, 0.5).backward()

    # then: d/dw 0.5 * w^2 = 0.5 * 2 * 3 = 3
    assert ptx_param.grad is not None and ptx_param.grad.item() == pytest.approx(3.0)


def test_ptx_without_lm_loss_is_rejected_when_gamma_positive() -> None:
    # given / when / then
    with pytest.raises(ValueError):
        ptx_mixed_loss(torch.tensor(1.0), None, 0.1)


# ---------------------------------------------------------------- LM quantities


def test_lm_loss_matches_per_position_cross_entropy() -> None:
    # given: one full row, one right-padded row, one left-padded row
    torch.manual_seed(4)
    logits = torch.randn(3, 5, 7)
    input_ids = torch.randint(0, 7, (3, 5))
    attention_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 0, 1, 1, 1]])

    # when
    loss = lm_loss(logits, input_ids, attention_mask)

    # then: average of cross entropies for each (position t -> token t+1) with both real
    losses = [
        F.cross_entropy(logits[b, t].unsqueeze(0), input_ids[b, t + 1].unsqueeze(0)).item()
        for b in range(3)
        for t in range(4)
        if attention_mask[b, t] and attention_mask[b, t + 1]
    ]
    assert len(losses) == 4 + 2 + 2
    assert loss.item() == pytest.approx(sum(losses) / len(losses), abs=1e-6)


def test_logprobs_of_by_hand_and_against_categorical() -> None:
    # given: logits [0, log 3] give probabilities [1/4, 3/4]
    logits = torch.tensor([[[0.0, math.log(3.0)]]])

    # when / then
    assert logprobs_of(logits, torch.tensor([[1]])).item() == pytest.approx(math.log(0.75))

    # given: random logits and tokens
    torch.manual_seed(5)
    logits = torch.randn(2, 4, 11)
    tokens = torch.randint(0, 11, (2, 4))

    # when
    logprobs = logprobs_of(logits, tokens)

    # then
    expected = torch.distributions.Categorical(logits=logits).log_prob(tokens)
    assert torch.allclose(logprobs, expected, atol=1e-6)


def test_entropy_from_logits() -> None:
    # given: uniform logits over 8 tokens and random logits
    torch.manual_seed(6)
    uniform = torch.zeros(1, 1, 8)
    logits = torch.randn(2, 3, 9)

    # when / then: log 8 for the uniform case
    assert entropy_from_logits(uniform).item() == pytest.approx(math.log(8.0))
    expected = torch.distributions.Categorical(logits=logits).entropy()
    assert torch.allclose(entropy_from_logits(logits), expected, atol=1e-6)


# ---------------------------------------------------------------- KL controllers


def test_adaptive_kl_controller_one_update_by_hand() -> None:
    # given: target 6, horizon 10000, beta 0.1
    controller = AdaptiveKLController(init_beta=0.1, target_kl=6.0, horizon=10000)

    # when: KL 6.6 over 256 steps: error 6.6/6 - 1 = 0.1 (inside the clip)
    controller.update(current_kl=6.6, n_steps=256)

    # then: beta = 0.1 * (1 + 0.1 * 256 / 10000) = 0.1 * 1.00256
    assert controller.beta == pytest.approx(0.100256)


def test_adaptive_kl_controller_clips_error_at_0_2() -> None:
    # given
    high = AdaptiveKLController(init_beta=0.1, target_kl=6.0, horizon=10000)
    low = AdaptiveKLController(init_beta=0.1, target_kl=6.0, horizon=10000)

    # when: KL 9 gives error 9/6 - 1 = 0.5 -> 0.2; KL 0 gives -1 -> -0.2
    high.update(current_kl=9.0, n_steps=256)
    low.update(current_kl=0.0, n_steps=256)

    # then: beta = 0.1 * (1 +/- 0.2 * 256 / 10000) = 0.1 * (1 +/- 0.00512)
    assert high.beta == pytest.approx(0.100512)
    assert low.beta == pytest.approx(0.099488)


def test_fixed_kl_controller_never_moves() -> None:
    # given
    controller = FixedKLController(beta=0.05)

    # when
    controller.update(current_kl=100.0, n_steps=256)

    # then
    assert controller.beta == 0.05
