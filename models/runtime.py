"""How a training loop runs: numeric precision, the optimizer, compilation, gradient checkpointing, peak memory.

Pure torch and Accelerate, shared by every training loop so a stage's
`precision`, `torch_compile` and `gradient_checkpointing` mean the same thing everywhere.
"""

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.state import AcceleratorState
from accelerate.utils import extract_model_from_parallel
from transformers import PreTrainedModel

from instructflow.models.runtime_fields import Precision

_MIXED = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


@dataclass
class _DDPKwargs(DistributedDataParallelKwargs):
    """Accelerate's DDP settings plus torch's `forward_sync_buffers`, which Accelerate does
    not list; its deprecated `broadcast_buffers=False` made every process print a
    FutureWarning. Only values other than the defaults reach DDP (KwargsHandler.to_kwargs).
    Accelerate takes a handler of its own class only: `ddp_accelerator` sets this one."""

    forward_sync_buffers: bool | None = None


NO_BUFFER_BROADCAST = _DDPKwargs(forward_sync_buffers=False)
"""DDP without its buffer broadcast at every forward pass. That broadcast is a collective,
so every process must make the same number of forward passes; PPO makes one per length
group of its own shard, and the counts differ (two processes of a Qwen2, whose rotary
table is a buffer, waited on each other for ever). The buffers of these models are
constants (rotary tables, masks; no running statistics), equal in every process, so the
one broadcast DDP still makes as it wraps the model (every process at once) changes nothing."""


def ddp_accelerator(**settings) -> Accelerator:
    """`Accelerator(**settings)` whose prepared models are wrapped in DDP with NO_BUFFER_BROADCAST."""
    made = Accelerator(**settings)
    made.ddp_handler = NO_BUFFER_BROADCAST  # read as it wraps a model (prepare_model)
    return made


def make_accelerator(precision: Precision = "fp32") -> Accelerator:
    """An Accelerator whose prepared models run under autocast at `precision`.

    Weights and optimizer state stay fp32 (mixed precision, not half-precision
    training); fp16 adds a gradient scaler and is meant for CUDA (on a CPU,
    bf16 is the half type with fast kernels).
    """
    if precision not in _MIXED:
        raise ValueError(f"precision must be one of {sorted(_MIXED)}, got {precision!r}")
    # Accelerate keeps one process-wide state and refuses a second precision; the stages
    # of one pipeline run share a process and may each ask for their own, so a change of
    # precision starts a new state (the process's distributed setup is kept).
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision", _MIXED[precision]) != _MIXED[precision]:
        AcceleratorState._reset_state()
    return ddp_accelerator(mixed_precision=_MIXED[precision])


_FUSED_ADAMW_DEVICES = {"cpu", "cuda"}


def adamw(params, **settings) -> torch.optim.AdamW:
    """AdamW, on its fused kernel where every parameter lives on a device that has one.

    The default AdamW on CPU runs about ten small ops per parameter tensor
    per step: at the embedded world's sizes a sixth of an SFT step on one
    thread (profiled), three times what the fused kernel takes. The update is
    the same formula with other float rounding, which is why cache keys carry
    this code. Hugging Face's Trainer (and so TRL) defaults to the fused
    kernel on torch >= 2.8 too.
    """
    params = list(params)
    fused = all(p.device.type in _FUSED_ADAMW_DEVICES and p.is_floating_point() for p in params)
    return torch.optim.AdamW(params, fused=fused or None, **settings)


def cxx_compiler_missing() -> str | None:
    """Why torch.compile cannot build CPU kernels here, or None when it can."""
    from torch._inductor import cpp_builder

    try:
        cpp_builder.get_cpp_compiler()
    except Exception as error:  # inductor raises its own InvalidCxxCompiler, or OSError
        return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return None


@contextlib.contextmanager
def compiled_trunk(model: torch.nn.Module, enabled: bool = True):
    """The model's trunk (its transformer blocks) compiled in place while the block runs.

    The trunk, not the whole model: the reward model calls its trunk and its
    score head separately, and the LM heads' `logits_to_keep` slicing is cheap
    anyway. In place (`nn.Module.compile`), so parameters, state-dict keys,
    DDP, PEFT and the optimizer see the same modules. Dynamic shapes: batches
    are length-bucketed, and one graph serves every length. Back to eager on
    exit: validation and sampling would each need graphs of their own
    (no-grad, key/value cache) for a few passes.
    """
    if not enabled:
        yield
        return
    trunk = _trunk(model)
    trunk.compile(dynamic=True)
    try:
        yield
    finally:
        trunk._compiled_call_impl = None  # what nn.Module.compile set; None calls forward eagerly


def _trunk(model: torch.nn.Module) -> torch.nn.Module:
    inner = extract_model_from_parallel(model)
    if hasattr(inner, "get_base_model"):  # PEFT: the adapted Hugging Face model
        inner = inner.get_base_model()
    return inner.base_model  # GPT-2's `transformer`, Llama's `model`, ...


def enable_gradient_checkpointing(model: PreTrainedModel) -> None:
    """Recompute activations in the backward pass instead of keeping them.

    Non-reentrant checkpointing: it needs no input that requires grad, so it
    works under frozen embeddings (LoRA). Hugging Face models checkpoint only
    in train mode; PPO runs its networks in eval mode (exact importance
    ratios), so there it saves nothing.
    """
    # transformers 5 renamed it (the old name warns in every stage's log, and goes in v6);
    # the earliest 5.x releases have only the old name
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False


class PeakMemory:
    """The peak memory a stretch of work added to its process: CUDA's allocator peak, else
    the process's peak RSS, less what the process held when `start()` was called; and
    that peak whole (`process_peak_bytes`), the memory the process needed meanwhile.

    A stage runs in the flow's process with one process, or in a process of its own
    (rank 0's with `--processes N`); the flow's process already holds Prefect, MLflow,
    their imports and whatever it kept from earlier stages, a fresh one only torch. The
    peak above the start is the stage's own in either, so one figure means one thing.
    On Linux the RSS high-water mark is reset at `start()` (writing 5 to
    /proc/self/clear_refs); where that is not possible, the peak is the process's since it
    began, so it can count more than the stage's own.
    """

    def __init__(self) -> None:
        self.cuda = torch.cuda.is_available()
        self.held_at_start = 0

    def start(self) -> "PeakMemory":
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self.held_at_start = int(torch.cuda.memory_allocated())
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass
            self.held_at_start = rss_bytes()
        return self

    def process_peak_bytes(self) -> int:
        """The process's whole peak since `start()` (CUDA's allocated bytes, else resident
        memory), what it held before included: what the machine had to give it, where
        `peak_bytes` is only what the stretch of work added."""
        return int(torch.cuda.max_memory_allocated()) if self.cuda else peak_rss_bytes()

    def peak_bytes(self) -> int:
        return self._added(self.process_peak_bytes())

    def readings_mb(self) -> dict[str, float]:
        """Both peaks in MiB, named as a stage's metrics name them, from one reading of the
        peak (two readings could straddle a new high and disagree)."""
        process_peak = self.process_peak_bytes()
        return {
            "peak_memory_mb": self._added(process_peak) / 2**20,
            "process_peak_memory_mb": process_peak / 2**20,
        }

    def _added(self, process_peak: int) -> int:
        return max(0, process_peak - self.held_at_start)


def rss_bytes() -> int:
    """The process's resident memory now (VmRSS), in bytes; 0 where /proc is not there."""
    try:
        match = re.search(r"VmRSS:\s+(\d+)\s+kB", Path("/proc/self/status").read_text())
    except OSError:
        return 0
    return int(match.group(1)) * 1024 if match else 0


def peak_rss_bytes() -> int:
    """The process's resident-set high-water mark (VmHWM), in bytes."""
    try:
        status = Path("/proc/self/status").read_text()
        match = re.search(r"VmHWM:\s+(\d+)\s+kB", status)
        if match:
            return int(match.group(1)) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
