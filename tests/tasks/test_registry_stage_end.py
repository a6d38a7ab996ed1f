"""The registry stage ends its MLflow run before it marks its folder done, as every stage does
(tasks/tracked.py finish_stage): a tracking server lost as the run ends is waited for, and a
run that cannot be ended leaves the stage unmarked and the registry as it found it."""

import pytest
from mlflow.exceptions import MlflowException

from instructflow.tasks import outages, registry
from instructflow.tasks.evaluation import EvalConfig
from instructflow.tasks.gate import GateConfig
from instructflow.tasks.registry_config import RegistryConfig
from instructflow.tasks.stage import DONE_MARKER, is_done
from tests.tasks.test_lost_tracking_server import Server

POLICY, RM = RegistryConfig().names("smoke")


def _lost_once_the_gate_is_recorded(monkeypatch, server: Server, back_after: int | None):
    """The server goes away as the next run is ended, right after the stage's last write
    (the gate's figures on its run); back after `back_after` more probes, or never."""
    real = registry.record_gate

    def record_then_lose(*args, **kwargs):
        metrics = real(*args, **kwargs)
        server.lost_as_a_run_ends = True
        if back_after is not None:
            server.back_after_probes = server.probes + back_after
        return metrics

    monkeypatch.setattr(registry, "record_gate", record_then_lose)


def _run_stage(tiny_dirs, generated_root, out) -> dict:
    sft_dir, rm_dir = tiny_dirs
    return registry.register_and_gate_task.fn(
        candidate="ppo_ptx",
        policy_dir=str(sft_dir),
        rm_dir=str(rm_dir),
        sft_dir=str(sft_dir),
        profile_dir=str(generated_root / "data" / "smoke"),
        eval_cfg=EvalConfig(max_new_tokens=8, samples_per_prompt=1),
        cfg=GateConfig(max_prompts=12),
        model_name=POLICY,
        reward_model_name=RM,
        lineage={"profile": "smoke", "dvc_data_md5": "test"},
        policy_metrics={},
        rm_metrics={},
        seed=0,
        out_dir=str(out),
        parent_run_id=None,
    )


def test_a_registry_stage_whose_run_cannot_be_ended_is_not_marked_done_nor_registered(
    prefect_harness, tiny_dirs, generated_root, client, tmp_path, monkeypatch
):
    # given an empty registry, and a tracking server that goes away for good as the
    # registry stage ends its run
    server = Server(monkeypatch)
    monkeypatch.setattr(outages, "OUTAGE_WAIT_SECONDS", 0.05)
    _lost_once_the_gate_is_recorded(monkeypatch, server, back_after=None)
    out = tmp_path / "runs" / "registry"
    # when the stage runs
    with pytest.raises(MlflowException, match="Connection refused"):
        _run_stage(tiny_dirs, generated_root, out)
    # then it is not marked done: its retry runs it again instead of serving a stage whose
    # run MLflow still shows RUNNING
    assert not (out / DONE_MARKER).exists()
    # and the registry is as the stage found it: the failed stage left no version behind
    assert client.search_registered_models() == []


def test_a_server_lost_as_the_registry_stage_ends_is_waited_for_then_the_stage_is_done(
    prefect_harness, tiny_dirs, generated_root, client, tmp_path, monkeypatch
):
    # given a tracking server that goes away as the registry stage ends its run, and is
    # back a moment later
    server = Server(monkeypatch)
    monkeypatch.setattr(outages, "OUTAGE_WAIT_SECONDS", 60.0)
    _lost_once_the_gate_is_recorded(monkeypatch, server, back_after=2)
    out = tmp_path / "runs" / "registry"
    # when the stage runs
    result = _run_stage(tiny_dirs, generated_root, out)
    # then the end waited for it: the run is FINISHED, the stage done, the version registered
    assert client.get_run(result["mlflow_run_id"]).info.status == "FINISHED"
    assert is_done(out)
    assert client.get_model_version(POLICY, result["policy_version"]).tags["profile"] == "smoke"
