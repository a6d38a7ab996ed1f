"""Tests for the PPO trainer on toy problems whose best response is known.

Networks are 2-layer GPT-2s built from config (tests/models/test_lm.py); the
reward model is either a tiny real one or a stub that pays for responses
whose first token has an even id, so the probability of a good first token
can be computed exactly before and after training.
"""

import copy
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from instructflow.models.batching import encode_prompt
from instructflow.models.formatting import format_prompt
from instructflow.models.lm import load_causal_lm
from instructflow.models.lm_training import pack_corpus
from instructflow.models.ppo import METRIC_KEYS, PPOTrainer
from instructflow.models.ppo_config import PPOHyper
from instructflow.models.ppo_loop import ppo_train
from instructflow.models.reward_model import reward_model_from_causal_lm, rewards
from tests.models.test_lm import CORPUS, save_tiny_checkpoint
from tests.models.test_sampling import eos_heavy_model

PROMPT = "reverse the word stone"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint("gpt2", tmp_path_factory.mktemp("ppo") / "ckpt")


class EvenFirstTokenReward(torch.nn.Module):
    """A reward-model stub read through instructflow.models.reward_model.rewards: 1 if the
    response's first token (column `prompt_len`) has an even id, else 0."""

    def __init__(self, prompt_len: int) -> None:
        super().__init__()
        self.prompt_len = prompt_len
        self.config = SimpleNamespace(reward_offset=0.0)
        self.score = torch.nn.Identity()
        stub = self

        class Trunk(torch.nn.Module):
            def forward(self, input_ids, **_):
                good = (input_ids[:, stub.prompt_len] % 2 == 0).float()
                hidden = good[:, None, None].expand(input_ids.shape[0], input_ids.shape[1], 1)
                return SimpleNamespace(last_hidden_state=hidden)

        self.base_model = Trunk()


class Untouchable:
    """Stands in for the pretraining blocks: any use fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"ptx blocks touched ({name})")

    def __getitem__(self, key):
        raise AssertionError("ptx blocks indexed")

    def __len__(self):
        raise AssertionError("ptx blocks measured")


def prompt_len(tokenizer) -> int:
    return len(encode_prompt(tokenizer, format_prompt(PROMPT)))


@torch.no_grad()
def p_even_first_token(model, tokenizer) -> float:
    ids = torch.tensor([encode_prompt(tokenizer, format_prompt(PROMPT))])
    probs = model(ids).logits[0, -1].softmax(-1)
    return float(probs[0::2].sum())


def toy_trainer(checkpoint: Path, **overrides) -> tuple[PPOTrainer, object]:
    policy, tokenizer = load_causal_lm(checkpoint)
    ref, _ = load_causal_lm(checkpoint)
    value, _ = reward_model_from_causal_lm(checkpoint)
    settings = dict(
        iterations=6,
        rollout_batch=32,
        minibatch_size=8,
        ppo_epochs=2,
        lr=3e-3,
        value_lr=1e-3,
        kl_beta=0.0,
        max_new_tokens=2,
        no_eos_penalty=0.0,
        reference_samples=32,
    )
    settings.update(overrides)
    run = {name: settings.pop(name) for name in ("ptx_gamma", "seed") if name in settings}
    rm = EvenFirstTokenReward(prompt_len(tokenizer))
    hyper = PPOHyper(**settings)
    return PPOTrainer(policy, ref, value, rm, tokenizer, None, hyper, **run), tokenizer


# ---------------------------------------------------------------- learning


def test_ppo_moves_probability_toward_the_rewarded_tokens(checkpoint: Path) -> None:
    # given: a random policy that starts an answer with an even token about half the time
    trainer, tokenizer = toy_trainer(checkpoint)
    before = p_even_first_token(trainer.unwrapped_policy, tokenizer)
    seen: list[tuple[int, dict]] = []
    # when: a few PPO iterations are run against a reward for even first tokens
    ppo_train(trainer, [PROMPT] * 8, None, lambda i, m: seen.append((i, m)))
    # then: the exact probability of an even first token has grown well past its start
    after = p_even_first_token(trainer.unwrapped_policy, tokenizer)
    assert after > before + 0.1, (before, after)
    # and: every iteration reported the agreed metric keys, ptx loss absent (NaN) without ptx
    assert [i for i, _ in seen] == list(range(6))
    for _, metrics in seen:
        assert set(METRIC_KEYS) <= set(metrics)
        assert math.isnan(metrics["ppo/ptx_loss"]) and math.isnan(metrics["ppo/reward_gold"])
    assert seen[-1][1]["ppo/reward_rm"] > seen[0][1]["ppo/reward_rm"]


def test_monitor_sees_prompt_indices_and_responses_but_does_not_steer(checkpoint: Path) -> None:
    trainer, _ = toy_trainer(checkpoint, iterations=1)
    calls = []

    def monitor(indices, texts):
        calls.append((indices, texts))
        return 0.25

    prompts = [PROMPT] * 40
    seen = []
    ppo_train(trainer, prompts, None, lambda i, m: seen.append(m), monitor=monitor)
    ((indices, texts),) = calls
    assert len(indices) == len(texts) == 32 and len(set(indices)) == 32  # drawn without replacement
    assert all(0 <= i < 40 for i in indices)
    assert seen[0]["ppo/reward_gold"] == 0.25


def test_on_iteration_returning_true_stops_and_checkpoints(checkpoint: Path) -> None:
    trainer, _ = toy_trainer(
        checkpoint, iterations=10, rollout_batch=8, minibatch_size=8, ppo_epochs=1
    )
    saved = []
    ppo_train(
        trainer,
        [PROMPT],
        None,
        lambda i, m: i == 2,
        checkpoint=lambda t: saved.append(t.iteration),
        checkpoint_every=2,
    )
    assert trainer.iteration == 3 and trainer.stopped
    assert saved == [2, 3]  # the periodic one, and one at the (early) end


# ---------------------------------------------------------------- rewards


def test_rm_score_lands_on_the_last_response_token_only(checkpoint: Path) -> None:
    # given: policy and reference that end responses at random places (and differ, so KL != 0)
    policy, tokenizer = eos_heavy_model(p_eos=0.3)
    ref, _ = eos_heavy_model(p_eos=0.5)
    value, _ = reward_model_from_causal_lm(checkpoint)
    rm, _ = reward_model_from_causal_lm(checkpoint, seed=1)
    hyper = PPOHyper(
        rollout_batch=32,
        minibatch_size=8,
        max_new_tokens=6,
        kl_beta=0.1,
        no_eos_penalty=2.0,
        reward_normalization="none",
    )
    trainer = PPOTrainer(policy, ref, value, rm, tokenizer, None, hyper)
    # when: one rollout is turned into rewards
    exp = trainer.rollout(["reverse the word stone", "hi", "what is 12 + 30?"] * 11)
    # then: rewards = -beta * kl everywhere, plus the episode score on the last valid token
    mask = exp.mask.bool()
    lengths = exp.mask.sum(1)
    assert lengths.min() < lengths.max() and exp.truncated.any() and not exp.truncated.all()
    assert (exp.kl[mask] != 0).any()
    extra = exp.rewards + 0.1 * exp.kl
    last = lengths - 1
    rows = torch.arange(len(lengths))
    torch.testing.assert_close(extra[rows, last], exp.score)
    extra[rows, last] = 0.0
    assert torch.count_nonzero(extra) == 0
    # and: the score is the raw RM score minus the penalty for a missing EOS
    torch.testing.assert_close(exp.score, exp.rm_score - 2.0 * exp.truncated.float())
    # and: nothing is left on padding
    for tensor in (exp.rewards, exp.advantages, exp.values, exp.logprobs, exp.ref_logprobs):
        assert torch.count_nonzero(tensor[~mask]) == 0
    # and: the RM scored each unpadded prompt + response, with an EOS appended where it was missing
    prompts = ["reverse the word stone", "hi", "what is 12 + 30?"] * 11
    for i in range(len(prompts)):
        ids = (
            encode_prompt(tokenizer, format_prompt(prompts[i]))
            + exp.response_ids[i, mask[i]].tolist()
        )
        if exp.truncated[i]:
            ids.append(tokenizer.eos_token_id)
        with torch.no_grad():
            alone = rewards(rm, torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
        torch.testing.assert_close(exp.rm_score[i : i + 1], alone, atol=1e-4, rtol=1e-4)


def test_reference_normalisation_standardises_sft_scores(checkpoint: Path) -> None:
    trainer, _ = toy_trainer(checkpoint, reference_samples=64)
    trainer.fit_reward_normalizer([PROMPT] * 64)
    assert trainer.normalizer.count == 64
    assert 0.2 < trainer.normalizer.mean < 0.8  # about half the first tokens are even
    assert (trainer.value_shift, trainer.value_scale) == pytest.approx(
        (trainer.normalizer.mean, math.sqrt(trainer.normalizer.var)), rel=1e-4
    )


# ---------------------------------------------------------------- ptx


def test_ptx_changes_the_update_and_gamma_zero_never_reads_the_pretraining_data(
    checkpoint: Path,
) -> None:
    _, tokenizer = load_causal_lm(checkpoint)
    blocks = pack_corpus(tokenizer, CORPUS, 16)

    def one_iteration(gamma: float, ptx_blocks) -> tuple[dict, dict]:
        trainer, _ = toy_trainer(checkpoint, iterations=1, ptx_gamma=gamma, ptx_batch_size=4)
        seen = []
        ppo_train(trainer, [PROMPT], ptx_blocks, lambda i, m: seen.append(m))
        return trainer.unwrapped_policy.state_dict(), seen[0]

    # gamma = 0 with data that fails on any access: plain PPO runs untouched
    plain, plain_metrics = one_iteration(0.0, Untouchable())
    again, _ = one_iteration(0.0, None)
    mixed, mixed_metrics = one_iteration(1.0, blocks)
    # same seed, same rollout: only the ptx term can make a difference
    assert all(torch.equal(plain[k], again[k]) for k in plain)
    assert any(not torch.equal(plain[k], mixed[k]) for k in plain)
    assert mixed_metrics["ppo/reward_rm"] == plain_metrics["ppo/reward_rm"]
    assert math.isfinite(mixed_metrics["ppo/ptx_loss"]) and math.isnan(
        plain_metrics["ppo/ptx_loss"]
    )


def test_ptx_needs_pretraining_blocks(checkpoint: Path) -> None:
    trainer, _ = toy_trainer(checkpoint, iterations=1, ptx_gamma=0.5)
    with pytest.raises(ValueError, match="pretraining blocks"):
        ppo_train(trainer, [PROMPT], None, lambda i, m: None)


# ---------------------------------------------------------------- state


ROUND_TRIP = dict(
    iterations=4,
    rollout_batch=16,
    adaptive_kl=True,
    kl_beta=0.05,
    target_kl=0.01,
    reward_normalization="running",
)


def test_state_dict_round_trip_continues_identically(checkpoint: Path) -> None:
    # given: one run of 4 iterations, and one stopped after 2 whose state is reloaded into a fresh trainer
    full, _ = toy_trainer(checkpoint, **ROUND_TRIP)
    ppo_train(full, [PROMPT], None, lambda i, m: None)
    first, _ = toy_trainer(checkpoint, **ROUND_TRIP | {"iterations": 2})
    states = []
    ppo_train(
        first,
        [PROMPT],
        None,
        lambda i, m: None,
        checkpoint=lambda t: states.append(copy.deepcopy(t.state_dict())),
    )
    torch.manual_seed(123)  # whatever happened to the RNG in between
    second, _ = toy_trainer(checkpoint, **ROUND_TRIP)
    second.load_state_dict(states[0])
    assert second.iteration == 2
    # when: the reloaded trainer finishes the run
    ppo_train(second, [PROMPT], None, lambda i, m: None)
    # then: it ends exactly where the uninterrupted run ended
    assert second.iteration == 4
    assert second.kl_ctl.beta == full.kl_ctl.beta != 0.05
    assert second.normalizer.count == full.normalizer.count
    a, b = full.unwrapped_policy.state_dict(), second.unwrapped_policy.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_stop_request_names_the_iteration_the_log_and_checkpoint_name(checkpoint: Path) -> None:
    from instructflow.models.checkpoints import TrainingInterrupted, clear_stop, request_stop

    # given: a run whose third iteration (index 2, logged as "iteration 3/10") sees a stop request
    trainer, _ = toy_trainer(
        checkpoint, iterations=10, rollout_batch=8, minibatch_size=8, ppo_epochs=1
    )
    saved = []

    def on_iteration(index: int, _metrics: dict) -> None:
        if index == 2:
            request_stop()

    # when: the loop honours it
    try:
        with pytest.raises(TrainingInterrupted) as stopped:
            ppo_train(
                trainer,
                [PROMPT],
                None,
                on_iteration,
                checkpoint=lambda t: saved.append(t.iteration),
            )
    finally:
        clear_stop()
    # then: the message, the checkpoint and the resume point all say iteration 3
    assert str(stopped.value) == "stopped after iteration 3; checkpoint kept"
    assert saved == [3] and trainer.iteration == 3
