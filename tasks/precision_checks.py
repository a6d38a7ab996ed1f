"""Refuse fp16 mixed precision on a machine without a GPU, before any training.

fp16 autocast is meant for CUDA: on a CPU torch runs it slowly, or not at all for
some operations, and its gradient scaler is for CUDA too; bf16 is the CPU's half
type with fast kernels. Accepted silently, it showed up only once a stage trained.
"""

from typing import Any

import torch
from pydantic import BaseModel

from instructflow.tasks.tables import Problem

PARAMS = "params"  # the "file" of problems found in the run's parameters


def precision_problems(params: Any) -> list[Problem]:
    """One problem per stage whose `precision` is fp16 when no GPU is present."""
    if torch.cuda.is_available():
        return []
    names = [n for n in type(params).model_fields if isinstance(getattr(params, n), BaseModel)]
    message = "fp16 needs a GPU (none here): on a CPU use bf16 (or fp32)"
    return [
        Problem(PARAMS, 0, f"{name}.precision", message)
        for name in names
        if getattr(params.stage(name), "precision", None) == "fp16"
    ]
