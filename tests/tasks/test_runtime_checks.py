"""Runtime settings the machine cannot run are refused before any training (tasks/runtime_checks.py):
`precision: fp16` without a GPU, `torch_compile: true` without a C++ compiler."""

import pytest
import torch

from instructflow.flows.params_io import build_params
from instructflow.models import runtime
from instructflow.tasks import preflight
from instructflow.tasks.runtime_checks import compile_problems, precision_problems


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


def test_torch_compile_without_a_cxx_compiler_is_refused_naming_each_stage(monkeypatch):
    from torch._inductor import config

    monkeypatch.setattr(config.cpp, "cxx", ("no-such-cxx-compiler",))
    monkeypatch.delenv("CXX", raising=False)
    assert runtime.cxx_compiler_missing()  # inductor's own search, told to find nothing
    params = build_params({"sft": {"torch_compile": True}, "reward_model": {"torch_compile": True}})
    problems = preflight._param_problems(params)
    assert sorted(p.field for p in problems) == ["reward_model.torch_compile", "sft.torch_compile"]
    line = str(problems[0])
    assert "\n" not in line and "C++ compiler" in line


def test_torch_compile_off_asks_for_no_compiler(monkeypatch):
    from instructflow.tasks import runtime_checks

    monkeypatch.setattr(runtime_checks, "cxx_compiler_missing", lambda: "none here")
    assert compile_problems(build_params({"profile": "smoke"})) == []
    assert compile_problems(build_params({"sft": {"torch_compile": True}})) != []
