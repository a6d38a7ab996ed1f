from pathlib import Path

import pytest
import torch

from instructflow.models.length_groups import in_row_order, length_groups, over_responses
from instructflow.models.lm import load_causal_lm
from instructflow.models.sampling import generate, position_ids_from_mask, response_logits
from tests.models.test_lm import ARCHS, save_tiny_checkpoint


def test_rows_are_grouped_by_length_and_each_group_keeps_only_the_columns_it_uses():
    # 16 rows: 2 groups of 8. Row i attends columns [i % 4, 4 + i // 2)
    mask = torch.zeros(16, 12, dtype=torch.long)
    for i in range(16):
        mask[i, i % 4 : 4 + i // 2] = 1
    groups = length_groups(mask, length=torch.arange(16).flip(0))  # longest first
    assert [g.rows.tolist() for g in groups] == [list(range(15, 7, -1)), list(range(7, -1, -1))]
    # rows 8..15 use columns 0..11 (row 15: [3, 11)); rows 0..7 use columns 0..7 (row 7: [3, 7))
    assert [(g.first, g.end) for g in groups] == [(0, 11), (0, 7)]
    # results come back in the rows' own order
    parts = [g.rows * 10 for g in groups]
    assert in_row_order(groups, parts).tolist() == [i * 10 for i in range(16)]


def test_a_small_batch_is_one_group_and_empty_rows_keep_one_column():
    groups = length_groups(torch.zeros(7, 5, dtype=torch.long))
    assert len(groups) == 1 and (groups[0].first, groups[0].end) == (0, 1)


@pytest.mark.parametrize("arch", ARCHS)
def test_grouped_response_logits_equal_one_padded_forward(arch: str, tmp_path: Path):
    model, tokenizer = load_causal_lm(save_tiny_checkpoint(arch, tmp_path / "m"))
    prompts = [("add two and " + "three " * (i % 5)).strip() for i in range(24)]
    torch.manual_seed(0)
    ro = generate(model, tokenizer, prompts, max_new_tokens=9)
    qr, am, plen, width = ro.query_response, ro.attention_mask, ro.prompt_len, 9
    # the formula before grouping: one forward over the whole padded batch, sliced
    ids, mask = qr[:, :-1], am[:, :-1]
    whole = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask))
    expected = whole.logits[:, plen - 1 : plen - 1 + width].float() / 0.7
    grouped = response_logits(model, qr, am, plen, width, temperature=0.7)
    assert grouped.shape == expected.shape
    on = ro.response_mask.bool()
    assert on.sum() < on.numel()  # some responses ended early: their groups were cut
    torch.testing.assert_close(grouped[on], expected[on], atol=1e-5, rtol=1e-5)
    # gradients reach the network from every group
    grouped[on].sum().backward()
    assert model.get_input_embeddings().weight.grad.abs().sum() > 0


def test_columns_past_a_groups_longest_response_are_zeros():
    # 16 rows, prompt block of 2 columns; rows 0..7 have 1 response token, rows 8..15 have 3
    qr = torch.arange(16 * 5).reshape(16, 5)
    am = torch.ones(16, 5, dtype=torch.long)
    am[:8, 3:] = 0
    seen = []

    def run(ids, mask, n):
        seen.append((ids.shape[1], n))
        return ids[:, -n:].float()  # "predicts" with the input id at each position

    out = over_responses(run, qr, am, prompt_len=2, width=3)
    assert sorted(seen) == [(2, 1), (4, 3)]
    assert out[0].tolist() == [1.0, 0.0, 0.0]  # the id at column 1 predicts response token 0
    assert out[8].tolist() == [41.0, 42.0, 43.0]
