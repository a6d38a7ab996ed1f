"""`precision: fp16` without a GPU is refused before any training (tasks/precision_checks.py)."""

import pytest
import torch

from instructflow.flows.params_io import build_params
from instructflow.tasks import preflight
from instructflow.tasks.precision_checks import precision_problems


def test_fp16_on_a_cpu_is_refused_naming_the_field_and_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    params = build_params({"profile": "smoke", "sft": {"precision": "fp16"}})
    problems = preflight._param_problems(params)  # what `run` and the flow check first
    assert [p.field for p in problems] == ["sft.precision"]
    line = str(problems[0])
    assert "\n" not in line and "fp16" in line and "bf16" in line


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_other_precisions_on_a_cpu_pass(monkeypatch, precision):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    params = build_params(
        {"ppo": {"precision": precision}, "reward_model": {"precision": precision}}
    )
    assert precision_problems(params) == []


def test_fp16_with_a_gpu_passes(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    params = build_params({"ppo": {"precision": "fp16"}})
    assert precision_problems(params) == []
