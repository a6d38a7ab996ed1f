"""Tests for precision, gradient checkpointing and peak memory (instructflow.models.runtime)."""

import torch

from instructflow.models.lm import load_causal_lm
from instructflow.models.runtime import PeakMemory, enable_gradient_checkpointing, make_accelerator
from tests.models.test_lm import save_tiny_checkpoint

IDS = torch.tensor([[5, 9, 12, 40, 7, 3, 8, 8], [8, 8, 21, 30, 2, 11, 4, 6]])


def test_each_stage_may_ask_for_its_own_precision_in_one_process():
    # given the stages of one pipeline run in one process, asking for different precisions
    seen = []
    for precision in ("bf16", "fp32", "bf16", "fp32"):
        accelerator = make_accelerator(precision)
        inner = torch.nn.Linear(4, 4)
        # Accelerate hands outputs back in fp32: the dtype inside the forward tells the autocast.
        inner.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
        model = accelerator.prepare(torch.nn.Sequential(inner))
        model(torch.ones(2, 4))
    # then each got its own autocast (Accelerate alone refuses a second precision)
    assert seen == [torch.bfloat16, torch.float32, torch.bfloat16, torch.float32]


def test_gradient_checkpointing_computes_the_same_loss_and_gradients(tmp_path):
    path = save_tiny_checkpoint("llama", tmp_path / "llama")
    results = []
    for checkpointing in (False, True):
        model, _ = load_causal_lm(path)
        if checkpointing:
            enable_gradient_checkpointing(model)
        model.train()
        loss = model(input_ids=IDS, labels=IDS).loss
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results.append((loss.detach(), grads))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-6, atol=1e-7)


def test_gradient_checkpointing_is_enabled_without_a_deprecation_warning(tmp_path):
    # transformers 5 deprecates gradient_checkpointing_enable (removed in v6): its
    # FutureWarning, with a site-packages path, showed in every such stage's log
    import warnings

    model, _ = load_causal_lm(save_tiny_checkpoint("llama", tmp_path / "llama"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enable_gradient_checkpointing(model)
    assert [str(w.message) for w in caught if w.category is FutureWarning] == []
    assert model.is_gradient_checkpointing and model.config.use_cache is False


def test_peak_memory_reads_the_stages_own_peak_and_its_processs_whole_peak(monkeypatch):
    from instructflow.models import runtime

    mb = 2**20
    # given a CPU process holding 900 MB when the stage starts, whose resident peak while the
    # stage runs is 1150 MB (fake readers of /proc/self/status's VmRSS and VmHWM)
    monkeypatch.setattr(runtime.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "rss_bytes", lambda: 900 * mb)
    monkeypatch.setattr(runtime, "peak_rss_bytes", lambda: 1150 * mb)
    memory = PeakMemory().start()
    # then the stage's own peak is the 250 MB it added, the process's is all 1150 MB
    assert memory.peak_bytes() == 250 * mb and memory.process_peak_bytes() == 1150 * mb
    assert memory.readings_mb() == {"peak_memory_mb": 250.0, "process_peak_memory_mb": 1150.0}


def test_peak_memory_on_cuda_reads_the_allocators_peak_and_what_it_held_at_start(monkeypatch):
    from instructflow.models import runtime

    mb = 2**20
    # given CUDA's allocator holding 300 MB at the stage's start and peaking at 700 MB
    monkeypatch.setattr(runtime.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(runtime.torch.cuda, "reset_peak_memory_stats", lambda: None)
    monkeypatch.setattr(runtime.torch.cuda, "memory_allocated", lambda: 300 * mb)
    monkeypatch.setattr(runtime.torch.cuda, "max_memory_allocated", lambda: 700 * mb)
    memory = PeakMemory().start()
    # then the stage added 400 MB, and its process's allocator peak is the 700 MB
    assert memory.readings_mb() == {"peak_memory_mb": 400.0, "process_peak_memory_mb": 700.0}


def test_peak_memory_is_the_peak_since_start_not_since_the_process_began():
    # given a process that once held a large tensor (300 MB), now freed
    big = torch.ones(300 * 2**20 // 4)
    big.add_(1)
    earlier_peak = PeakMemory().peak_bytes()
    del big
    # when a new stretch of work starts and holds 100 MB at most
    memory = PeakMemory().start()
    small = torch.ones(100 * 2**20 // 4)
    small.add_(1)
    peak = memory.peak_bytes()
    # then its peak counts the 100 MB, not the 300 MB from before
    assert peak >= 100 * 2**20
    assert peak < earlier_peak - 150 * 2**20


STAGE_MB = 100


def stage_peak() -> int:
    """A stage that holds STAGE_MB at most, measured as a training stage measures itself."""
    memory = PeakMemory().start()
    work = torch.ones(STAGE_MB * 2**20 // 4)
    work.add_(1)
    return memory.peak_bytes()


def test_peak_memory_is_the_stages_own_in_the_flows_process_and_in_one_of_its_own():
    import subprocess
    import sys
    from pathlib import Path

    # given the stage run in a fresh process of its own (rank 0's under --processes N)
    probe = "from tests.models.test_runtime import stage_peak; print(stage_peak())"
    root = Path(__file__).resolve().parents[2]
    ran = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True)
    fresh = int(ran.stdout)
    # when it runs in a process that already holds 3x as much, which it keeps (the flow's
    # process with one process: Prefect, MLflow, earlier stages' models)
    held = torch.ones(3 * STAGE_MB * 2**20 // 4)
    held.add_(1)
    in_flow = stage_peak()
    del held
    # then both count the stage's own memory, not what its process held before it began
    assert fresh >= STAGE_MB * 2**20 and in_flow >= STAGE_MB * 2**20
    assert abs(in_flow - fresh) < STAGE_MB * 2**20 / 2


def test_adamw_is_fused_on_cpu_and_takes_the_adamw_step_by_its_formula():
    from instructflow.models.runtime import adamw

    # given one weight w = [1, -2] with gradient g = [0.5, 0.25] and no earlier step
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = adamw([w], lr=0.1, weight_decay=0.01, betas=(0.9, 0.95))
    w.grad = torch.tensor([0.5, 0.25])
    optimizer.step()
    # then it runs on the fused kernel
    assert optimizer.defaults["fused"] is True
    # and the step is AdamW's (Loshchilov & Hutter): decay, then the bias-corrected moments
    # m = 0.1 g, v = 0.05 g^2; m / (1 - 0.9) = g, v / (1 - 0.95) = g^2, so the update is
    # lr * g / (|g| + eps) = 0.1 * sign(g) to within eps
    decayed = torch.tensor([1.0, -2.0]) * (1 - 0.1 * 0.01)
    expected = decayed - 0.1 * torch.tensor([0.5, 0.25]) / (torch.tensor([0.5, 0.25]) + 1e-8)
    torch.testing.assert_close(w.detach(), expected)


def test_adamw_falls_back_to_the_plain_kernel_where_no_fused_one_exists():
    from instructflow.models.runtime import adamw

    # given a parameter on the meta device (no fused kernel there)
    w = torch.nn.Parameter(torch.zeros(2, device="meta"))
    # then the optimizer is built all the same, unfused
    assert not adamw([w], lr=0.1).defaults["fused"]


def test_fused_adamw_trains_a_model_as_the_plain_kernel_does_to_float_rounding(tmp_path):
    from instructflow.models.runtime import adamw

    # given two copies of one Llama, one stepped by runtime.adamw, one by torch's plain AdamW
    path = save_tiny_checkpoint("llama", tmp_path / "llama")
    (fused_model, _), (plain_model, _) = load_causal_lm(path), load_causal_lm(path)
    settings = {"lr": 1e-3, "weight_decay": 0.01, "betas": (0.9, 0.95)}
    fused = adamw(fused_model.parameters(), **settings)
    plain = torch.optim.AdamW(plain_model.parameters(), foreach=False, **settings)
    # when both take the same 5 steps
    for _ in range(5):
        for model, optimizer in ((fused_model, fused), (plain_model, plain)):
            model(input_ids=IDS, labels=IDS).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    # then the weights agree to float rounding, though they moved well beyond it
    pairs = zip(fused_model.named_parameters(), plain_model.parameters(), strict=True)
    for (name, a), b in pairs:
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    start = load_causal_lm(path)[0].state_dict()
    moved = max((p - start[n]).abs().max().item() for n, p in fused_model.named_parameters())
    assert moved > 1e-3
