"""Refuse runtime settings this machine cannot run, before any training.

- `precision: fp16` without a GPU: fp16 autocast is meant for CUDA; on a CPU
  torch runs it slowly, or not at all for some operations, and its gradient
  scaler is for CUDA too; bf16 is the CPU's half type with fast kernels.
  Accepted silently, it showed up only once a stage trained.
- `torch_compile: true` without a C++ compiler: inductor builds its CPU
  kernels with one, and would fail at the stage's first step.
"""

from typing import Any

import torch
from pydantic import BaseModel

from instructflow.models.runtime import cxx_compiler_missing
from instructflow.tasks.tables import Problem

PARAMS = "params"  # the "file" of problems found in the run's parameters


def _stages(params: Any) -> list[tuple[str, Any]]:
    names = [n for n in type(params).model_fields if isinstance(getattr(params, n), BaseModel)]
    return [(name, params.stage(name)) for name in names]


def precision_problems(params: Any) -> list[Problem]:
    """One problem per stage whose `precision` is fp16 when no GPU is present."""
    if torch.cuda.is_available():
        return []
    message = "fp16 needs a GPU (none here): on a CPU use bf16 (or fp32)"
    return [
        Problem(PARAMS, 0, f"{name}.precision", message)
        for name, stage in _stages(params)
        if getattr(stage, "precision", None) == "fp16"
    ]


def compile_problems(params: Any) -> list[Problem]:
    """One problem per stage with `torch_compile: true` when no C++ compiler is found."""
    asking = [name for name, stage in _stages(params) if getattr(stage, "torch_compile", False)]
    if not asking or (why := cxx_compiler_missing()) is None:
        return []
    message = f"torch.compile needs a C++ compiler (g++ or clang++, or $CXX): {why}; install one or set it false"
    return [Problem(PARAMS, 0, f"{name}.torch_compile", message) for name in asking]


def runtime_problems(params: Any) -> list[Problem]:
    """Every runtime setting of `params` this machine cannot run."""
    return precision_problems(params) + compile_problems(params)
