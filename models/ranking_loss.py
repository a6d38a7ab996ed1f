"""InstructGPT's K-wise ranking loss for the reward model, and its diagnostics.

A labeler ranks K responses to one prompt; the ranking implies C(K, 2) ordered
pairs (winner, loser). InstructGPT trains on all pairs of one prompt as ONE
batch element rather than shuffling the pairs into the dataset: each response
is then seen once per epoch (no overfitting from repeated completions) and the
K reward evaluations are shared by all pairs. Per prompt b with K_b responses:

    loss_b = -1 / C(K_b, 2) * sum_{w ranked above l} log sigmoid(r_w - r_l)

and the batch loss is the mean of loss_b over prompts, so a prompt with K=9
(36 pairs) weighs the same as one with K=4 (6 pairs).

Prompts with different K share a [B, K_max] tensor: `valid` marks the real
responses and padded slots of `ranking` hold -1.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def _pair_mask(ranking: Tensor, valid: Tensor | None) -> Tensor:
    """Return `better` [B, K, K] with better[b, i, j] = True iff response i is ranked above j.

    The rank of each response is read off a one-hot of the ranking instead of a
    scatter, so padded slots (-1) simply match no response and need no special case.
    """
    num_slots = ranking.shape[1]
    response_ids = torch.arange(num_slots, device=ranking.device)
    # one_hot[b, position, response] = ranking[b, position] == response
    one_hot = ranking.unsqueeze(-1) == response_ids
    in_ranking = one_hot.any(dim=1)  # [B, K]: responses that appear in the ranking
    if (one_hot.sum(dim=1) > 1).any():
        raise ValueError("ranking lists a response more than once")
    if valid is not None and not torch.equal(in_ranking, valid.bool()):
        raise ValueError("`valid` and the non-padded entries of `ranking` disagree")
    positions = response_ids.view(1, -1, 1)
    # rank[b, response] = position of that response in the best-first list (0 = best)
    rank = (one_hot * positions).sum(dim=1)
    both_real = in_ranking.unsqueeze(2) & in_ranking.unsqueeze(1)
    better = (rank.unsqueeze(2) < rank.unsqueeze(1)) & both_real
    return better


def _masked_rewards(rewards: Tensor, ranking: Tensor) -> Tensor:
    """Zero the rewards of padded slots so NaN/inf there cannot leak into the loss or its gradient."""
    num_slots = ranking.shape[1]
    real = (ranking.unsqueeze(-1) == torch.arange(num_slots, device=ranking.device)).any(dim=1)
    return rewards.masked_fill(~real, 0.0)


def kwise_ranking_loss(rewards: Tensor, ranking: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean over prompts of the per-prompt K-wise ranking loss (see module docstring).

    Args:
        rewards: [B, K] scalar reward of each response of a prompt (padded slots ignored).
        ranking: [B, K] response indices best-first; padded positions hold -1.
        valid: optional [B, K] bool marking real responses; checked against `ranking`.

    Returns:
        A scalar tensor.
    """
    better = _pair_mask(ranking, valid)
    rewards = _masked_rewards(rewards, ranking)
    # margin[b, i, j] = r_i - r_j, used only where i is ranked above j
    margin = rewards.unsqueeze(2) - rewards.unsqueeze(1)
    pair_losses = torch.where(better, -F.logsigmoid(margin), torch.zeros_like(margin))
    num_pairs = better.sum(dim=(1, 2))  # C(K_b, 2) per prompt
    if (num_pairs == 0).any():
        raise ValueError("every prompt needs at least 2 ranked responses")
    per_prompt = pair_losses.sum(dim=(1, 2)) / num_pairs.to(pair_losses.dtype)
    return per_prompt.mean()


def pairwise_accuracy(rewards: Tensor, ranking: Tensor, valid: Tensor | None = None) -> Tensor:
    """Fraction of all ranked pairs in the batch where the winner has the higher reward.

    Pairs are pooled over the batch (every labeler comparison counts once),
    which is how RM validation accuracy is usually reported. A tie counts 0.5,
    so a constant reward model scores exactly 0.5. The share is counted in float64: it is
    a fraction (7 of 15 pairs: 0.4666666666666667), which a float32 mean reported as
    0.46666666865348816; each pair's credit is the same in either precision.
    """
    better = _pair_mask(ranking, valid)
    rewards = _masked_rewards(rewards, ranking).detach()
    margin = rewards.unsqueeze(2) - rewards.unsqueeze(1)
    credit = (margin > 0).double() + 0.5 * (margin == 0).double()
    return credit[better].mean()


def bias_to_center(demo_rewards: Tensor) -> float:
    """The offset to ADD to the reward model so labeler demonstrations score mean 0.

    InstructGPT normalises the RM this way before PPO, so the RL reward starts
    near 0 for demonstration-quality answers and the KL term is on a known scale.
    """
    return -demo_rewards.detach().double().mean().item()
