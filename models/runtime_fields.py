"""The training configs' `precision` and `torch_compile` fields, each declared once.

Pydantic only, so that the run settings (flows/params.py) validate without
importing torch or accelerate; `instructflow.models.runtime` acts on them.
"""

from typing import Literal

from pydantic import Field

Precision = Literal["fp32", "bf16", "fp16"]


def precision_field():
    """The `precision` field of every training config (PPO, SFT, reward model), declared once."""
    return Field(
        "fp32",
        description="fp32, or mixed precision: bf16 / fp16 autocast with fp32 weights (fp16 is for CUDA; on CPU use bf16).",
    )


def torch_compile_field():
    """The `torch_compile` field of the supervised training configs (SFT, reward model), declared once."""
    return Field(
        False,
        description="Run the training steps through torch.compile (inductor, dynamic shapes; bench/mfu.py measures what it gives against eager steps), after a one-time compile of about 30 s per stage (a few seconds once torch's on-disk cache holds it). Needs a C++ compiler (g++ or clang++, or $CXX). Checkpoints, validation and sampling are the eager model's; training steps round floats differently, so figures move within their noise.",
    )
