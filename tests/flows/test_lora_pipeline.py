"""LoRA on every training stage of a smoke run on a Llama built from config.

The acceptance test of LoRA (issue 20): the run completes with a full report,
each training stage trained only adapters (trainable fraction < 1 in its
metrics), and the registered policy is a plain Hugging Face checkpoint that
`AutoModelForCausalLM` opens without peft.
"""

import json
from pathlib import Path

import mlflow
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from flows.params import PipelineParams
from models.tokenizer import train_tokenizer
from tasks.base_model import tokenizer_texts
from tests.flows.contract import SEVEN_POLICIES

pytestmark = pytest.mark.slow

LORA = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"]}


def test_lora_on_every_training_stage_of_a_llama_smoke_run(
    prefect_harness, make_project, fast_smoke, tmp_path, monkeypatch
):
    # given a tiny Llama base model and a fresh project root
    root = make_project()
    tokenizer = train_tokenizer(tokenizer_texts(root / "data" / "smoke"), vocab_size=512)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    llama_dir = tmp_path / "my-llama"
    LlamaForCausalLM(config).save_pretrained(llama_dir)
    tokenizer.save_pretrained(llama_dir)
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    from flows.pipeline import rlhf_pipeline

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

    # and the registered challenger opens with plain AutoModelForCausalLM (no peft) and generates
    # (a smoke run registers under the smoke name, never touching real runs' models)
    local = mlflow.artifacts.download_artifacts("models:/instructflow-policy-smoke@challenger")
    hf_dirs = [p.parent for p in sorted(Path(local).rglob("config.json"))]
    hf_dir = next(d for d in hf_dirs if (d / "tokenizer.json").exists())
    model = AutoModelForCausalLM.from_pretrained(hf_dir)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not any("lora" in name for name in model.state_dict())
    tok = AutoTokenizer.from_pretrained(hf_dir)
    out = model.generate(**tok("reverse the word stone", return_tensors="pt"), max_new_tokens=3)
    assert out.shape[1] > 0 and torch.isfinite(model(out).logits).all()
