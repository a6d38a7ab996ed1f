"""Forward passes over rows of similar length, each cut to the columns its rows use.

A batch padded to its longest row spends much of its work on padding: in a
PPO rollout the prompts are left-padded to the longest prompt and the
responses right-padded to the longest response (64 rollouts of the tiny
profile: about 16 of 24 prompt columns and 7 of 20 response columns are
used on average, so half of a padded batch is padding). Sorted by length
and cut into a few groups, each group cut to the columns its rows attend,
about three quarters of the work is on real tokens.

No attended token sees a cut column (the mask hides it, and positions come
from the mask), so every row's result is what one padded batch gives, up to
float rounding.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

LENGTH_GROUPS = 4
"""A batch runs in up to this many groups of rows of similar length..."""
ROWS_PER_GROUP = 8
"""...of at least this many rows each (a forward pass has a fixed cost too)."""


@dataclass(frozen=True)
class LengthGroup:
    rows: Tensor
    """Indices of the group's rows in the batch."""
    first: int
    end: int
    """Columns [first, end) hold every token the group's rows attend."""


def length_groups(attention_mask: Tensor, length: Tensor | None = None) -> list[LengthGroup]:
    """Rows sorted by `length` (default: attended tokens), in up to LENGTH_GROUPS groups.

    The groups, concatenated, list the rows in sorted order (`torch.cat([g.rows ...])`).
    """
    if length is None:
        length = attention_mask.sum(1)
    order = torch.argsort(length, stable=True)
    n_groups = max(1, min(LENGTH_GROUPS, attention_mask.shape[0] // ROWS_PER_GROUP))
    groups = []
    for rows in order.tensor_split(n_groups):
        used = attention_mask[rows].any(0).nonzero().squeeze(1).tolist() or [0]
        groups.append(LengthGroup(rows, used[0], used[-1] + 1))  # no attended token: one column
    return groups


def in_row_order(groups: list[LengthGroup], parts: list[Tensor]) -> Tensor:
    """The groups' results ([rows of the group, ...] each) as one tensor in the batch's row order."""
    order = torch.cat([g.rows for g in groups])
    return torch.cat(parts)[torch.argsort(order)]


ResponseFn = Callable[[Tensor, Tensor, int], Tensor]


def over_responses(
    run: ResponseFn, query_response: Tensor, attention_mask: Tensor, prompt_len: int, width: int
) -> Tensor:
    """[B, width, ...]: `run`'s per-position results at the positions that predict response tokens.

    Rows are left-padded prompts (columns < prompt_len) followed by right-padded
    responses (width columns). `run(ids, mask, n)` gets a group's trimmed ids and
    mask, without the last column (it predicts nothing scored), and returns its
    results at the last `n` positions: those that predict the group's response
    tokens. Columns past a group's longest response are zeros (callers mask them).
    """
    response_length = attention_mask[:, prompt_len : prompt_len + width].sum(1)
    groups = length_groups(attention_mask, response_length)
    parts = []
    for group in groups:
        n = max(1, min(group.end, prompt_len + width) - prompt_len)  # the group's response columns
        cols = slice(min(group.first, prompt_len - 1), prompt_len + n - 1)
        out = run(query_response[group.rows, cols], attention_mask[group.rows, cols], n)
        pad = [0, 0] * (out.dim() - 2) + [0, width - n]
        parts.append(F.pad(out, pad))
    return in_row_order(groups, parts)
