"""`--processes 2` (gloo on this CPU) computes what one process computes, for the same global batch and seed.

Every process walks the same seeded global batches, trains on its shard of
each, and its loss is its share of the global batch's mean (token mean for
SFT, prompt mean for the reward model); DDP averages the gradients. The
embedded and test GPT-2s have dropout 0, so no random mask differs between
the runs. What remains is float rounding: a shard is padded to its own
longest row and summed in another order.
"""

import os
from pathlib import Path

import pytest

from instructflow.tasks import launch
from tests.tasks import dist_targets
from tests.tasks.test_kill_resume import make_world

ROOT = Path(__file__).resolve().parents[2]
STEPS = 20
TOLERANCE = 1e-4

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """The same stages with one process (here) and with two (launched)."""
    root = tmp_path_factory.mktemp("processes")
    world = make_world(root / "world")
    one = dist_targets.supervised(world, root / "one", log=None)
    saved = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), saved])  # the target lives in tests/
    try:
        two = launch.run(
            dist_targets.supervised,
            {"world": world, "out": root / "two"},
            processes=2,
            work_dir=root / "two",
            log=None,
            log_prefix=None,
        )
    finally:
        os.environ["PYTHONPATH"] = saved
    return {"one": one, "two": two}


def _gaps(runs: dict, stage: str) -> list[float]:
    one, two = runs["one"]["records"][stage], runs["two"]["records"][stage]
    assert [s for s, _ in one] == [s for s, _ in two] and len(one) >= STEPS
    return [abs(a - b) for (_, a), (_, b) in zip(one[:STEPS], two[:STEPS], strict=True)]


@pytest.mark.parametrize("stage", ["sft", "rm"])
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
