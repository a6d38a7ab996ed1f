"""A user's own base model (a tiny Llama built from config, not GPT-2), with LoRA on every
training stage of a smoke run.

The acceptance test of LoRA (issue 20): the run completes with a full report,
each training stage trained only adapters (trainable fraction < 1 in its
metrics), and the registered policy loads through MLflow's transformers flavor
as a plain Llama, without peft.
"""

import json

import mlflow
import pytest
import torch

from instructflow.flows.params import PipelineParams
from instructflow.tasks.base_model import tokenizer_texts
from tests.flows.contract import SEVEN_POLICIES, SMOKE_POLICY, SMOKE_REWARD_MODEL
from tests.tiny_models import tiny_llama

pytestmark = pytest.mark.slow

LORA = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"]}


def test_lora_on_every_training_stage_of_a_llama_smoke_run(
    prefect_harness, make_project, fast_smoke, tmp_path, monkeypatch
):
    # given a tiny Llama base model and a fresh project root
    root = make_project()
    llama_dir = tiny_llama(tmp_path / "my-llama", tokenizer_texts(root / "data" / "smoke"), 512)
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    from instructflow.flows.pipeline import rlhf_pipeline

    # when the pipeline runs with LoRA on SFT, the baselines, the RM and PPO
    fields = fast_smoke(
        base_model=str(llama_dir),
        sft={"lora": LORA},
        baselines={"lora": LORA},
        reward_model={"lora": LORA},
        ppo={"lora": LORA},
    )
    result = rlhf_pipeline(PipelineParams(**fields))

    # then the report is complete
    assert set(result["policies"]) == SEVEN_POLICIES
    # and every stage ran on the Llama: the checkpoints it wrote are Llama checkpoints
    for stage in ("base_model", "sft", "reward_model", "ppo", "ppo_ptx"):
        configs = list((root / "runs" / stage).glob("*/model/config.json"))
        assert configs, stage
        assert json.loads(configs[0].read_text())["model_type"] == "llama", stage
    # and every training stage trained a small part of its network and kept its adapter
    runs = root / "runs"
    for stage, key in (
        ("sft", "sft"),
        ("reward_model", "rm"),
        ("ppo", "ppo"),
        ("ppo_ptx", "ppo_ptx"),
    ):
        done = json.loads(next((runs / stage).glob("*/DONE.json")).read_text())
        assert 0 < done["metrics"][f"{key}/trainable_fraction"] < 0.5, stage
        assert done["metrics"][f"{key}/peak_memory_mb"] > 0, stage
        model_dir = next((runs / stage).glob("*/model"))
        assert not any(
            "lora" in line for line in (model_dir / "config.json").read_text().splitlines()
        )
        assert (model_dir.parent / "adapter" / "adapter_config.json").exists(), stage

    # and the report shows each training stage's share of trained weights and peak memory
    training = result["training"]
    assert set(training) == {"sft", "flan", "t0", "reward_model", "ppo", "ppo_ptx"}
    assert all(0 < row["trainable_fraction"] < 0.5 for row in training.values()), training
    assert all(row["peak_memory_mb"] > 0 for row in training.values()), training

    # and each registered version lists the adapters merged into its own weights: the
    # policy SFT's and PPO's, the reward model SFT's (its start) and its own
    client = mlflow.MlflowClient()
    challenger = client.get_model_version_by_alias(SMOKE_POLICY, "challenger")
    rm = client.get_model_version(SMOKE_REWARD_MODEL, challenger.tags["reward_model_version"])
    stages = lambda tags: [item.split()[0] for item in tags["lora"].split("; ")]  # noqa: E731
    assert stages(challenger.tags) == ["sft", "ppo"] and stages(rm.tags) == ["sft", "reward_model"]

    # and the registered challenger loads as plain transformers components (no peft) and generates
    # (a smoke run registers under the smoke name, never touching real runs' models)
    parts = mlflow.transformers.load_model(
        "models:/instructflow-policy-smoke@challenger", return_type="components"
    )
    model, tok = parts["model"], parts["tokenizer"]
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not any("lora" in name for name in model.state_dict())
    out = model.generate(**tok("reverse the word stone", return_tensors="pt"), max_new_tokens=3)
    assert out.shape[1] > 0 and torch.isfinite(model(out).logits).all()
