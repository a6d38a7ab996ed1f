"""Tests for the memory plan's arithmetic (instructflow.models.memory_plan), against hand counts."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from instructflow.models.lora import LoraOptions
from instructflow.models.memory_plan import (
    Shape,
    activation_bytes,
    plan_ppo,
    plan_rm,
    plan_sft,
    shape_of,
)

H, KV, LAYERS, VOCAB, INTER = 32, 16, 2, 320, 64
CONFIG = LlamaConfig(
    hidden_size=H,
    intermediate_size=INTER,
    num_hidden_layers=LAYERS,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=VOCAB,
)


def test_parameter_counts_match_the_built_network_and_lora_by_hand():
    shape = shape_of(CONFIG, LoraOptions(r=4, target_modules=("q_proj", "v_proj")))
    # the full count is the real network's
    torch.manual_seed(0)
    assert shape.params == sum(p.numel() for p in LlamaForCausalLM(CONFIG).parameters())
    # LoRA: r * (in + out) per adapted matrix; q_proj is H -> H, v_proj H -> KV (2 heads of 8)
    per_layer = 4 * (H + H) + 4 * (H + KV)
    assert shape.lora_params == LAYERS * per_layer
    # the RM's adapters plus its score head (H -> 1, no bias), trained in full
    assert shape.rm_lora_params == LAYERS * per_layer + H
    # the RM drops the untied LM head (VOCAB x H) and adds the score head
    assert shape.rm_params == shape.params - VOCAB * H + H
    assert (shape.layers, shape.hidden, shape.kv_dim, shape.vocab) == (LAYERS, H, KV, VOCAB)


SHAPE = Shape(
    params=1000, rm_params=900, lora_params=10, rm_lora_params=12,
    layers=2, hidden=8, heads=2, kv_dim=4, intermediate=16, vocab=50,
)  # fmt: skip


def test_sft_terms_by_hand():
    full = plan_sft(SHAPE, batch_size=3, seq_len=5, lora=False)
    # weights, gradients and the two AdamW moments of 1000 fp32 parameters
    assert (full.weights, full.gradients, full.optimizer) == (4000, 4000, 8000)
    # per token: 2 layers x (10*8 + 3*16 + 2*2*5) fp32 values + 3 x 50 fp32 logits terms
    assert full.activations == 3 * 5 * (2 * (80 + 48 + 20) * 4 + 3 * 50 * 4)
    assert full.peak == 16000 + full.activations
    lora = plan_sft(SHAPE, batch_size=3, seq_len=5, lora=True)
    assert (lora.weights, lora.gradients, lora.optimizer) == (4040, 40, 80)


def test_checkpointing_and_half_precision_shrink_activations():
    plain = activation_bytes(SHAPE, 3, 5, lm_head=False, half=False, checkpointing=False)
    # checkpointing keeps each layer's input (8 values) plus one layer's activations
    ckpt = activation_bytes(SHAPE, 3, 5, lm_head=False, half=False, checkpointing=True)
    assert plain == 3 * 5 * 2 * 148 * 4
    assert ckpt == 3 * 5 * (2 * 8 + 148) * 4
    assert activation_bytes(SHAPE, 3, 5, False, True, False) == plain // 2


def test_rm_reads_k_sequences_per_prompt_and_ppo_holds_networks_once_with_lora():
    rm = plan_rm(SHAPE, batch_size=2, k=4, seq_len=5, lora=False)
    assert rm.activations == activation_bytes(SHAPE, 8, 5, False, False, False)
    full = plan_ppo(
        SHAPE, rollout_batch=6, minibatch_size=3, prompt_len=3, max_new_tokens=2, lora=False
    )
    lora = plan_ppo(
        SHAPE, rollout_batch=6, minibatch_size=3, prompt_len=3, max_new_tokens=2, lora=True
    )
    # full: policy, reference, best-policy copy, value model and RM
    assert full.weights == (3 * 1000 + 2 * 900) * 4
    # LoRA: one policy and one RM trunk, both adapter sets, and a copy of the best adapters
    assert lora.weights == (1000 + 900 + 22 + 10) * 4
    assert (full.optimizer, lora.optimizer) == (2 * 1900 * 4, 2 * 22 * 4)
    # rollout: KV cache 2 x layers x 6 x 5 x 4 values vs the log-prob pass 6 x 5 x 50 x 2
    assert full.rollout == max(2 * 2 * 6 * 5 * 4 * 4, 6 * 5 * 50 * 4 * 2)
