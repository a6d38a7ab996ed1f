"""Under `--processes 2` each process may make its own number of forward passes per step.

PPO runs the policy over the length groups of its own shard of every
minibatch, so two processes make different numbers of forward passes before
each backward. DDP's default broadcast of buffers at every forward is a
collective that needs equal counts: with a Qwen2 (whose rotary table is a
buffer) the processes waited on each other for ever, 3 minutes into a run
on a user's model, while GPT-2 (no buffers) ran. The accelerators the
training loops make (models/runtime.py) turn that broadcast off.
"""

import os
from pathlib import Path

import pytest

from instructflow.tasks import launch
from tests.tasks import dist_targets

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


def test_processes_with_different_forward_counts_train_in_step(tmp_path):
    saved = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), saved])  # the target lives in tests/
    try:
        result = launch.run(
            dist_targets.uneven_forwards,
            {},
            processes=2,
            work_dir=tmp_path,
            log=None,
            log_prefix=None,
        )
    finally:
        os.environ["PYTHONPATH"] = saved
    # DDP averaged the same gradients into both copies
    assert result == {"weights_equal": True}
