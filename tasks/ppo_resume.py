"""The PPO stage's resume checkpoints: the whole training state in out_dir/resume, atomically.

Every `checkpoint_every` iterations the trainer's state (weights, optimizers,
KL controller, RNGs: instructflow.models.ppo_state), the monitor history and the best
policy so far are written here; a run killed half-way and started again with
the same parameters has the same out_dir and continues from the newest one
that passes its digest check.
"""

import json
from pathlib import Path

from instructflow.models.checkpoints import CheckpointStore
from instructflow.tasks.checkpoints import RESUME


def _store(out_dir: Path) -> CheckpointStore:
    # ppo_train decides when to checkpoint; the store keeps the last two, verified by digest.
    return CheckpointStore(out_dir / RESUME, every=1)


def write_resume(out_dir: Path, payload: dict) -> None:
    """Save the resume checkpoint (atomic, with its digest) and its history as readable JSON."""
    saved = _store(out_dir).save(payload["trainer"]["iteration"], payload)
    (saved / "history.json").write_text(json.dumps(payload["history"], indent=2))


def find_resume(out_dir: Path) -> Path | None:
    found = _store(out_dir).checkpoints()
    return found[0] if found else None


def read_resume(out_dir: Path) -> dict | None:
    """The newest checkpoint that passes its digest check (an older one, with a warning, if not)."""
    return _store(out_dir).load()
