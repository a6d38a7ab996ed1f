"""Tests for LoRA adapters (instructflow.models.lora) and PPO on adapters (reference = adapters off).

Tiny Llama / GPT-2 checkpoints built from config (tests.models.test_lm).
"""

import pytest
import torch
from transformers import AutoModelForCausalLM

from instructflow.models.lm import load_causal_lm
from instructflow.models.lora import (
    LoraOptions,
    adapters_off,
    add_lora,
    merge_saved_adapter,
    merged,
    trainable_fraction,
    trainable_parameters,
)
from instructflow.models.ppo import PPOTrainer
from instructflow.models.ppo_config import PPOHyper
from instructflow.models.reward_model import reward_model_from_causal_lm, rewards
from instructflow.models.sampling import sequence_logprobs
from tests.models.test_lm import save_tiny_checkpoint

SPEC = LoraOptions(r=4, alpha=8)
IDS = torch.tensor([[5, 9, 12, 40, 7, 3], [8, 8, 21, 30, 2, 11]])
MASK = torch.ones_like(IDS)


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS, attention_mask=MASK).logits


def train_a_little(model, steps: int = 3) -> None:
    """A few large steps so the adapters move well away from their zero initialisation."""
    optimizer = torch.optim.SGD(trainable_parameters(model), lr=0.5)
    for _ in range(steps):
        loss = model(input_ids=IDS, attention_mask=MASK, labels=IDS).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def test_adapters_train_only_a_small_part_and_off_means_the_base_model(tmp_path):
    # given a tiny Llama and an untouched copy of it
    path = save_tiny_checkpoint("llama", tmp_path / "llama")
    model, _ = load_causal_lm(path)
    base, _ = load_causal_lm(path)
    # when it gets adapters (peft's default targets for Llama: q_proj, v_proj) and trains
    peft_model = add_lora(model, SPEC, "causal_lm")
    network = peft_model.get_base_model()
    assert network is model  # the same HF network, now carrying adapters
    fraction = trainable_fraction(network)
    names = [n for n, p in network.named_parameters() if p.requires_grad]
    train_a_little(network)
    # then only adapter weights trained, a small fraction of the whole
    assert names and all("lora_" in n for n in names)
    assert 0 < fraction < 0.2
    # and with adapters on the outputs moved, with adapters off they are the base model's exactly
    assert not torch.allclose(logits(network), logits(base), atol=1e-4)
    with adapters_off(peft_model):
        torch.testing.assert_close(logits(network), logits(base), rtol=0, atol=0)


def test_merged_model_is_plain_and_computes_what_the_adapters_did(tmp_path):
    # given a trained adapter on a tiny GPT-2 (Conv1D layers: peft's fan_in_fan_out case)
    path = save_tiny_checkpoint("gpt2", tmp_path / "gpt2")
    model, tokenizer = load_causal_lm(path)
    peft_model = add_lora(model, SPEC, "causal_lm")
    train_a_little(peft_model.get_base_model())
    with_adapters = logits(peft_model.get_base_model())
    peft_model.save_pretrained(tmp_path / "adapter")
    # when merged in place, and separately from the saved adapter into a fresh base
    plain = merged(peft_model)
    from_saved = merge_saved_adapter(load_causal_lm(path)[0], tmp_path / "adapter")
    # then both are the plain architecture, without adapter weights, and compute the same
    for merged_model in (plain, from_saved):
        assert type(merged_model).__name__ == "GPT2LMHeadModel"
        assert not any("lora" in k for k in merged_model.state_dict())
        torch.testing.assert_close(logits(merged_model), with_adapters, rtol=1e-4, atol=1e-4)
    # and a saved merged model opens with plain AutoModelForCausalLM
    plain.save_pretrained(tmp_path / "merged")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    torch.testing.assert_close(logits(reloaded), with_adapters, rtol=1e-4, atol=1e-4)


def test_reward_model_adapters_train_the_new_head_and_off_gives_the_original_rm(tmp_path):
    # given a reward model built from a tiny Llama and an untouched copy
    path = save_tiny_checkpoint("llama", tmp_path / "llama")
    rm, _ = reward_model_from_causal_lm(path, seed=1)
    original, _ = reward_model_from_causal_lm(path, seed=1)
    peft_model = add_lora(rm, SPEC, "reward")
    network = peft_model.get_base_model()
    trainable = [n for n, p in network.named_parameters() if p.requires_grad]
    # the score head trains in full (peft's modules_to_save), the trunk through adapters
    assert any("score" in n and "lora" not in n for n in trainable)
    optimizer = torch.optim.SGD(trainable_parameters(network), lr=0.5)
    for _ in range(3):
        (-rewards(network, IDS, MASK)[0]).backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        before = rewards(original, IDS, MASK)
        assert not torch.allclose(rewards(network, IDS, MASK), before, atol=1e-4)
        with adapters_off(peft_model):
            torch.testing.assert_close(rewards(network, IDS, MASK), before, rtol=0, atol=0)


def test_ppo_on_adapters_keeps_the_reference_and_reward_model_frozen(tmp_path):
    # given LoRA PPO (no separate reference or RM) and full copies of SFT and RM
    path = save_tiny_checkpoint("llama", tmp_path / "llama")
    policy, tokenizer = load_causal_lm(path)
    sft, _ = load_causal_lm(path)
    value, rm_tokenizer = reward_model_from_causal_lm(path, seed=2)
    rm, _ = reward_model_from_causal_lm(path, seed=2)
    hyper = PPOHyper(
        iterations=1, rollout_batch=4, minibatch_size=2, ppo_epochs=2, lr=5e-2, value_lr=5e-2,
        max_new_tokens=4, reward_normalization="none",
    )  # fmt: skip
    trainer = PPOTrainer(
        add_lora(policy, SPEC, "causal_lm"),
        None,
        add_lora(value, SPEC, "reward"),
        None,
        tokenizer,
        rm_tokenizer,
        hyper,
    )
    prompts = ["reverse the word stone", "what is 12 + 30?"] * 2
    # when one iteration runs (rollout with ref log-probs and RM scores, then updates)
    _, exp = trainer.step(prompts, None)
    # then the rollout's reference log-probs and RM scores are those of the untouched SFT and RM
    qr, am = exp.query_response, exp.attention_mask
    ref = sequence_logprobs(sft, qr, am, exp.prompt_len, exp.response_ids, exp.mask)
    torch.testing.assert_close(exp.ref_logprobs, ref, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        eos = torch.full_like(qr[:, :1], tokenizer.eos_token_id)
        pad = torch.full_like(qr[:, :1], tokenizer.pad_token_id)
        ids = torch.cat([qr, torch.where(exp.truncated.unsqueeze(1), eos, pad)], dim=1)
        mask = torch.cat([am, exp.truncated.unsqueeze(1).to(am.dtype)], dim=1)
        torch.testing.assert_close(exp.rm_score, rewards(rm, ids, mask), rtol=1e-5, atol=1e-5)
    # and after the update the policy moved while its adapters-off view is still SFT
    with trainer.reference() as reference:
        torch.testing.assert_close(logits(reference), logits(sft), rtol=0, atol=0)
    assert not torch.allclose(logits(trainer.unwrapped_policy), logits(sft), atol=1e-4)


def test_adapters_start_from_the_seed_not_from_what_the_process_drew_before(tmp_path):
    # the same stage in another process (accelerate launch) or after other stages must
    # start from the same adapters: their initialisation depends on the seed alone
    path = save_tiny_checkpoint("gpt2", tmp_path / "base")

    def adapters(seed: int, draws_before: int) -> dict[str, torch.Tensor]:
        model, _ = load_causal_lm(path)
        torch.rand(draws_before)  # whatever ran before in this process
        peft_model = add_lora(model, SPEC, "causal_lm", seed)
        return {k: v.clone() for k, v in peft_model.named_parameters() if "lora_A" in k}

    first, second = adapters(3, 0), adapters(3, 1000)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    other = adapters(4, 0)
    assert any(not torch.equal(first[k], other[k]) for k in first)


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_adding_and_merging_adapters_print_no_warning_about_what_peft_handles(tmp_path, model_type):
    import warnings

    # given a tiny Llama (peft reads its deprecated `is_gradient_checkpointing`) or GPT-2
    # (whose Conv1D layers peft notes it must transpose)
    path = save_tiny_checkpoint(model_type, tmp_path / model_type)
    model, _ = load_causal_lm(path)
    # when it gets adapters and a stage merges them, with every warning an error
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        peft_model = add_lora(model, SPEC, "causal_lm")
        peft_model.save_pretrained(tmp_path / "adapter")
        base, _ = load_causal_lm(path)
        merge_saved_adapter(base, tmp_path / "adapter")
    # then none reached the stage's log
