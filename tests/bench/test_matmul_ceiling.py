"""The matmuls a step dispatches (bench/matmul_ceiling.py), against counts worked out by hand."""

import torch

from bench.matmul_ceiling import RecordMatmuls, matmul_flops, replay_seconds


def test_a_linear_layer_forward_and_backward_is_three_matmuls_of_2_m_n_k_each():
    layer = torch.nn.Linear(3, 4)
    inputs = torch.randn(5, 3, requires_grad=True)
    recorder = RecordMatmuls()
    with recorder:
        layer(inputs).sum().backward()
    # forward x W^T + b (addmm 5x3 @ 3x4), backward dL/dx (5x4 @ 4x3) and dL/dW (4x5 @ 5x3):
    # each 2 * 5 * 3 * 4 = 120 FLOPs
    assert [matmul_flops(call) for call in recorder.calls] == [120, 120, 120]


def test_a_batched_matmul_counts_every_matrix_in_the_batch():
    recorder = RecordMatmuls()
    with recorder:
        torch.bmm(torch.randn(2, 3, 4), torch.randn(2, 4, 5))
    assert [matmul_flops(call) for call in recorder.calls] == [2 * 2 * 3 * 4 * 5]


def test_a_transposed_operand_is_replayed_with_its_own_layout():
    recorder = RecordMatmuls()
    with recorder:
        torch.randn(4, 3).t() @ torch.randn(4, 5)
    (_, (left_shape, left_stride), _) = recorder.calls[0]
    assert (tuple(left_shape), tuple(left_stride)) == ((3, 4), (1, 3))
    assert replay_seconds(recorder.calls, repeats=1) > 0
