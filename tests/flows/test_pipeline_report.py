"""The embedded world's report blocks, filled from the stages' results (flows/world_results.py)."""

from instructflow.flows.world_results import fill_report
from instructflow.tasks.report import empty_report


def _result(prefix: str, fraction: float, memory: float) -> dict:
    metrics = {f"{prefix}/trainable_fraction": fraction, f"{prefix}/peak_memory_mb": memory}
    return {"metrics": metrics, "model_dir": f"/runs/{prefix}-1/model"}


def test_the_report_has_every_training_stages_trainable_fraction_and_peak_memory():
    # given every stage's result, each training stage with its readings (the RM's under rm/)
    names = ("sft", "flan", "t0", "ppo", "ppo_ptx")
    models = {name: _result(name, 0.1 * (i + 1), 800.0 + i) for i, name in enumerate(names)}
    models["rm"] = _result("rm", 0.05, 900.0)
    models["rm"]["metrics"] |= {"rm/accuracy_heldout_labels": 0.6, "rm/accuracy_vs_gold": 0.7}
    models["judge"] = {"dir": "/runs/judge/judge-1", "metrics": {}}
    models["rm_inputs"] = {"rm": "reward_model-1"}
    policies = {name: {"model_dir": models[name]["model_dir"]} for name in names}
    result = empty_report({"mlflow_run_id": "abc"})
    # when the report is filled from them
    evaluated = {"dir": "/runs/evaluation/evaluation-1", "rows": {}}
    fill_report(result, {"labeler_agreement": 0.7}, models, policies, evaluated)
    # then its training block has each training stage's two readings, by stage name
    assert set(result["training"]) == {*names, "reward_model"}
    assert result["training"]["reward_model"] == {"trainable_fraction": 0.05, "peak_memory_mb": 900}
    assert result["training"]["ppo_ptx"] == {"trainable_fraction": 0.5, "peak_memory_mb": 804.0}
