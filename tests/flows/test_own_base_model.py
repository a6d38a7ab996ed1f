"""A user's own base model: a tiny Llama (not GPT-2) saved as a local Hugging Face directory
goes through the same base-model path and a full smoke run of the pipeline."""

import json

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from flows.params import PipelineParams
from models.tokenizer import train_tokenizer
from tasks.base_model import tokenizer_texts
from tests.flows.contract import SEVEN_POLICIES

pytestmark = pytest.mark.slow


def test_a_llama_base_model_runs_the_whole_smoke_pipeline(
    prefect_harness, make_project, tmp_path, monkeypatch
):
    # given a tiny Llama checkpoint in a local directory and a fresh project root
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

    # when the pipeline runs with it as base_model
    params = PipelineParams(profile="smoke", base_model=str(llama_dir), ppo={"iterations": 2})
    result = rlhf_pipeline(params)

    # then every stage ran on the Llama: the checkpoints it wrote are Llama checkpoints
    for stage in ("base_model", "sft", "reward_model", "ppo", "ppo_ptx"):
        configs = list((root / "runs" / stage).glob("*/model/config.json"))
        assert configs, stage
        assert json.loads(configs[0].read_text())["model_type"] == "llama", stage
    # and the report has all seven policies
    assert set(result["policies"]) == SEVEN_POLICIES
