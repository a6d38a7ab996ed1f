"""`--processes 2` (gloo on this CPU) computes what one process computes, for the same global batch and seed.

Every process walks the same seeded global batches, trains on its shard of
each, and its loss is its share of the global batch's mean (token mean for
SFT and PPO, prompt mean for the reward model); DDP averages the gradients.
The embedded and test GPT-2s have dropout 0, so no random mask differs
between the runs. What remains is float rounding: a shard is padded to its
own longest row and summed in another order.

PPO's one-process side samples each row from its own seed (`row_seeded`,
what N processes always do), not from the global generator as a plain
`--processes 1` run does: a batch sampled from one generator cannot be cut
into shards that reproduce it, so against the plain path the responses,
hence every PPO figure, would differ by sampling noise, not by rounding.
"""

import os
from pathlib import Path

import pytest

from instructflow.models.reward_model import reward_model_from_causal_lm
from instructflow.tasks import launch
from tests.tasks import dist_targets
from tests.tasks.test_kill_resume import make_world

ROOT = Path(__file__).resolve().parents[2]
STEPS = 20
TOLERANCE = 1e-4

# One launch of two processes for every comparison: about 60 s on 2 busy cores.
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """The same stages with one process (here) and with two (launched)."""
    root = tmp_path_factory.mktemp("processes")
    world = make_world(root / "world")
    rm, tokenizer = reward_model_from_causal_lm(world["base"])  # PPO's (untrained) RM
    rm.save_pretrained(root / "rm")
    tokenizer.save_pretrained(root / "rm")
    one = dist_targets.all_stages(world, root / "rm", root / "one", log=None)
    saved = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), saved])  # the target lives in tests/
    try:
        two = launch.run(
            dist_targets.all_stages,
            {"world": world, "rm_dir": root / "rm", "out": root / "two"},
            processes=2,
            work_dir=root / "two",
            log=None,
            log_prefix=None,
        )
    finally:
        os.environ["PYTHONPATH"] = saved
    assert one["world"] == {"size": 1, "backend": None}
    assert two["world"] == {"size": 2, "backend": "gloo"}  # rank 0's result came back
    assert not (root / "two" / launch.FOLDER).exists()  # the launch folder is cleaned up
    return {"one": one, "two": two}


def _gaps(runs: dict, stage: str) -> list[float]:
    one, two = runs["one"]["records"][stage], runs["two"]["records"][stage]
    assert [s for s, _ in one] == [s for s, _ in two] and len(one) >= STEPS
    return [abs(a - b) for (_, a), (_, b) in zip(one[:STEPS], two[:STEPS], strict=True)]


@pytest.mark.parametrize("stage", ["pretrain", "sft", "rm"])
def test_train_losses_of_the_first_20_steps_agree(runs, stage):
    gaps = _gaps(runs, stage)
    print(f"{stage}: largest loss gap over {STEPS} steps {max(gaps):.2e}")
    assert max(gaps) < TOLERANCE


def test_validation_and_kept_models_agree(runs):
    one, two = runs["one"], runs["two"]
    assert one["sft"]["best_epoch"] == two["sft"]["best_epoch"]
    assert one["sft"]["best_valid_loss"] == pytest.approx(
        two["sft"]["best_valid_loss"], abs=TOLERANCE
    )
    for key in ("rm/valid_accuracy", "rm/accuracy_heldout_labels", "rm/reward_offset"):
        assert one["rm"][key] == pytest.approx(two["rm"][key], abs=TOLERANCE), key


PPO_KEYS = (
    "ppo/kl",
    "ppo/reward_rm",
    "ppo/policy_loss",
    "ppo/value_loss",
    "ppo/ptx_loss",
    "ppo/beta",
    "ppo/approx_kl",
    "ppo/entropy",
    "ppo/reward_gold",
)


def test_ppo_first_3_iterations_agree(runs):
    one, two = runs["one"]["ppo"], runs["two"]["ppo"]
    assert len(one) == len(two) == 3
    gaps = {
        key: max(abs(a[key] - b[key]) for a, b in zip(one, two, strict=True)) for key in PPO_KEYS
    }
    print("ppo: largest gap per metric over 3 iterations", {k: f"{v:.1e}" for k, v in gaps.items()})
    assert max(gaps.values()) < 1e-3, gaps
    assert one[-1]["ppo/kl"] > 0  # it did train
    # The KL controller of each process moved beta by the whole batch's KL (ppo/kl, which
    # matches one process's), not by its own shard's.
    hyper = dist_targets.PPO
    for now, after in zip(two, two[1:], strict=False):
        error = min(max(now["ppo/kl"] / hyper.target_kl - 1, -0.2), 0.2)
        expected = now["ppo/beta"] * (1 + error * hyper.rollout_batch / hyper.kl_horizon)
        assert after["ppo/beta"] == pytest.approx(expected, rel=1e-6)
