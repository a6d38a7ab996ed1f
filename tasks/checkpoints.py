"""Where a training stage keeps its resume checkpoints, and when they are dropped.

A stage's output folder runs/<stage>/<key>/ holds resume/ while the stage is
unfinished. Started again with the same key (same config, inputs and code),
the stage keeps that folder and its loop continues from the newest good
checkpoint (instructflow.models.checkpoints); a finished stage (DONE.json) or one with
nothing to resume starts from an empty folder. Once the stage is marked done
its checkpoints are deleted: the cache serves it from then on.
"""

import shutil
from pathlib import Path

from instructflow.models.checkpoints import CheckpointStore
from instructflow.tasks import interrupts
from instructflow.tasks.stage import is_done

RESUME = "resume"


def store(out_dir: Path, every: int) -> CheckpointStore:
    """The loop's checkpoints; from here on SIGINT/SIGTERM checkpoint and stop it (instructflow.tasks.interrupts)."""
    interrupts.reclaim()
    return CheckpointStore(Path(out_dir) / RESUME, every)


def has_checkpoint(out_dir: Path) -> bool:
    return bool(CheckpointStore(Path(out_dir) / RESUME, 1).checkpoints())


def prepare_out_dir(out_dir: str | Path) -> Path:
    """Keep an unfinished run's checkpoints (and what it wrote beside them); otherwise an empty folder."""
    out = Path(out_dir)
    if is_done(out) or not has_checkpoint(out):
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def finish(out_dir: Path) -> None:
    """The stage is done: its checkpoints are of no more use."""
    shutil.rmtree(Path(out_dir) / RESUME, ignore_errors=True)
