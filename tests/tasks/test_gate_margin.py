"""The gate's margin: from the setting, or from a sweep aggregate's measured noise."""

import json

import pytest

from instructflow.tasks import gate_margin


def test_without_a_sweep_the_setting_is_the_margin():
    assert gate_margin.resolve(0.02, None) == (0.02, "setting gate.win_margin")


def test_a_sweep_aggregate_gives_its_noise_and_says_where_from(tmp_path):
    aggregate = {
        "gate_noise": {
            "policy": "ppo_ptx",
            "win_margin": 0.047,
            "pairs": [{"seeds": [0, 1], "win_rate": 0.547}, {"seeds": [0, 2], "win_rate": 0.48}],
        },
        "sweep": {"mlflow_run_id": "abc123"},
        "provenance": {"profile": "tiny"},
    }
    path = tmp_path / "aggregate.json"
    path.write_text(json.dumps(aggregate))
    margin, source = gate_margin.resolve(0.0, str(path))
    assert margin == 0.047
    assert "abc123" in source and "0 vs 1: 0.547" in source and "tiny" in source


def test_a_file_without_gate_noise_is_refused_by_name(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("{}")
    with pytest.raises(ValueError, match="report.json has no gate_noise"):
        gate_margin.resolve(0.0, str(path))
