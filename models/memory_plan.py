"""How much memory a training stage needs, worked out from the model's shape.

An estimate, not a measurement: the terms a team sizes a machine by.
- weights: every network the stage holds, fp32 master copies (mixed
  precision autocasts the forward; weights and optimizer state stay fp32);
- gradients and AdamW state (two moments): of what trains only (with LoRA,
  the adapters and a new head);
- activations kept for the backward pass of one batch (per token and layer
  about 10*h + 3*I values plus 2 * heads * seq attention scores and
  probabilities; the LM head's logits, their log-softmax and its gradient in
  fp32; with gradient checkpointing only each layer's input plus one layer);
- PPO's rollout: the KV cache of generation, or the no-grad log-prob pass
  over the whole rollout batch, whichever is larger (they do not overlap).
The peak is weights + gradients + optimizer + max(activations, rollout).
Not counted: the interpreter and libraries (a CPU process holds several
hundred MB before any model, and more once it has trained and sampled;
flows/plan.py's `runtime_bytes` measures both), the allocator's
slack, data tables, and (on a GPU) the CUDA context.
"""

from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, PretrainedConfig

from instructflow.models.lora import LoraOptions, add_lora
from instructflow.models.reward_model import reward_network_on_meta

FP32 = 4


@dataclass(frozen=True)
class Shape:
    """What the estimate needs to know about a causal LM (and the RM built from it)."""

    params: int
    rm_params: int
    lora_params: int
    rm_lora_params: int
    layers: int
    hidden: int
    heads: int
    kv_dim: int
    intermediate: int
    vocab: int


def _count(model: torch.nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def shape_of(config: PretrainedConfig, lora: LoraOptions | None) -> Shape:
    """Parameter counts by building the networks on the meta device (no memory, exact counts)."""
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(config)
    rm = reward_network_on_meta(config)
    params, rm_params = _count(lm), _count(rm)
    lora_params = rm_lora_params = 0
    if lora is not None:
        lora_params = _count(add_lora(lm, lora, "causal_lm").get_base_model(), trainable=True)
        rm_lora_params = _count(add_lora(rm, lora, "reward").get_base_model(), trainable=True)
    text = config.get_text_config()
    hidden = text.hidden_size
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    intermediate = getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None)
    return Shape(
        params=params,
        rm_params=rm_params,
        lora_params=lora_params,
        rm_lora_params=rm_lora_params,
        layers=text.num_hidden_layers,
        hidden=hidden,
        heads=heads,
        kv_dim=kv_heads * head_dim,
        intermediate=intermediate or 4 * hidden,
        vocab=text.vocab_size,
    )


@dataclass(frozen=True)
class StagePlan:
    stage: str
    lora: bool
    weights: int
    gradients: int
    optimizer: int
    activations: int
    rollout: int = 0

    @property
    def peak(self) -> int:
        return self.weights + self.gradients + self.optimizer + max(self.activations, self.rollout)


def activation_bytes(
    shape: Shape, sequences: int, seq_len: int, lm_head: bool, half: bool, checkpointing: bool
) -> int:
    """Activations one forward keeps for its backward, for `sequences` x `seq_len` tokens."""
    per_layer = 10 * shape.hidden + 3 * shape.intermediate + 2 * shape.heads * seq_len
    width = 2 if half else FP32
    layers = (
        (shape.layers * shape.hidden + per_layer) if checkpointing else shape.layers * per_layer
    )
    logits = 3 * shape.vocab * FP32 if lm_head else 0
    return sequences * seq_len * (layers * width + logits)


def _states(name: str, lora: bool, held: int, trainable: int, activations: int, rollout=0):
    return StagePlan(
        stage=name,
        lora=lora,
        weights=held * FP32,
        gradients=trainable * FP32,
        optimizer=2 * trainable * FP32,
        activations=activations,
        rollout=rollout,
    )


def plan_sft(shape, batch_size, seq_len, lora, half=False, checkpointing=False) -> StagePlan:
    trainable = shape.lora_params if lora else shape.params
    acts = activation_bytes(shape, batch_size, seq_len, True, half, checkpointing)
    # With LoRA the weights held are the base plus the adapters.
    return _states("sft", lora, shape.params + shape.lora_params * lora, trainable, acts)


def plan_rm(shape, batch_size, k, seq_len, lora, half=False, checkpointing=False) -> StagePlan:
    """Each batch element is one prompt with its K responses: batch_size * K sequences."""
    trainable = shape.rm_lora_params if lora else shape.rm_params
    acts = activation_bytes(shape, batch_size * k, seq_len, False, half, checkpointing)
    return _states(
        "reward_model", lora, shape.rm_params + shape.rm_lora_params * lora, trainable, acts
    )


def plan_ppo(
    shape, rollout_batch, minibatch_size, prompt_len, max_new_tokens, lora, half=False
) -> StagePlan:
    """Policy and value model train; the SFT reference and the RM are frozen.

    Full fine-tuning holds four networks and keeps a copy of the best policy;
    with LoRA, two (reference and RM are the same networks with adapters off)
    and a copy of the best adapters.
    """
    seq = prompt_len + max_new_tokens
    if lora:
        trainable = shape.lora_params + shape.rm_lora_params
        held = shape.params + shape.rm_params + trainable + shape.lora_params
    else:
        trainable = shape.params + shape.rm_params
        held = 2 * shape.params + 2 * shape.rm_params + shape.params
    # Policy and value backward passes run one after the other: the larger one counts.
    acts = max(
        activation_bytes(shape, minibatch_size, seq, True, half, False),
        activation_bytes(shape, minibatch_size, seq, False, half, False),
    )
    kv_cache = 2 * shape.layers * rollout_batch * seq * shape.kv_dim * FP32
    logprob_pass = rollout_batch * seq * shape.vocab * FP32 * 2  # logits and their log-softmax
    return _states("ppo", lora, held, trainable, acts, rollout=max(kv_cache, logprob_pass))
