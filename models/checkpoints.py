"""Resumable training loops: atomic checkpoints verified by digest, and a cooperative stop.

A training loop saves its whole state (weights, optimizer, scheduler, RNGs,
data position) every `every` steps into `folder/step-<n>/`: written into a
temporary folder, then renamed into place, so a kill at any instant leaves
either the new checkpoint or none. The last `keep` checkpoints stay. Each
records the sha256 of its state file; loading checks it, and a checkpoint
that fails (truncated, corrupted, unreadable) is skipped for the one before
it, with a one-line warning on stderr.

A stop request (SIGINT/SIGTERM, set by the orchestration) is checked by the
loops after each step: they save a checkpoint there and raise
`TrainingInterrupted`, so an interrupted run loses no finished step.

Pure torch: no Prefect, no MLflow.
"""

import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch

from instructflow.models.distributed import main_process

STATE = "state.pt"
META = "meta.json"
_STOP = threading.Event()
_HONOURED = threading.Event()  # a loop saw the request and is unwinding


class TrainingInterrupted(KeyboardInterrupt):
    """A loop stopped after a step because a stop was requested (a KeyboardInterrupt, so nothing retries it)."""


def request_stop() -> None:
    _STOP.set()


def clear_stop() -> None:
    _STOP.clear()
    _HONOURED.clear()


def stop_honoured() -> bool:
    return _HONOURED.is_set()


def interrupt(message: str) -> TrainingInterrupted:
    """The exception a loop raises when it has stopped for a request (and marks the request honoured)."""
    _HONOURED.set()
    return TrainingInterrupted(message)


STOP_FILE_ENV = "INSTRUCTFLOW_STOP_FILE"
"""Set in the processes of an `accelerate launch`: a file whose existence is the stop request
(the Prefect task's process, which received the signal, creates it)."""


def stop_requested() -> bool:
    if _STOP.is_set():
        return True
    stop_file = os.environ.get(STOP_FILE_ENV)
    return bool(stop_file) and os.path.exists(stop_file)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _save_state(state: dict[str, Any], path: Path) -> None:
    """torch.save through a Python file, so that a full disk surfaces as the OS's own error.

    Given a path, torch reports a failed write as "unexpected pos N vs M"; given a
    file, that RuntimeError carries the OSError (ENOSPC, ...) the write raised.
    """
    with open(path, "wb") as file:
        try:
            torch.save(state, file)
        except RuntimeError as error:
            if isinstance(error.__context__, OSError):
                error.__context__.filename = str(path)
                raise error.__context__ from error
            raise


class CheckpointStore:
    """The checkpoints of one training loop in `folder`, one every `every` steps."""

    def __init__(self, folder: Path, every: int, keep: int = 2):
        if every < 1:
            raise ValueError(f"checkpoint interval must be >= 1 step, got {every}")
        self.folder, self.every, self.keep = Path(folder), every, keep

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, newest first."""
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob("step-*"), reverse=True)

    def save(self, step: int, state: dict[str, Any]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.folder))
        try:
            _save_state(state, tmp / STATE)
            (tmp / META).write_text(json.dumps({"step": step, "sha256": sha256_file(tmp / STATE)}))
            final = self.folder / f"step-{step:09d}"
            shutil.rmtree(final, ignore_errors=True)  # the same step saved again (a replay)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old in self.checkpoints()[self.keep :]:
            shutil.rmtree(old, ignore_errors=True)
        for stray in self.folder.glob(".tmp-*"):  # a write killed half-way, earlier
            shutil.rmtree(stray, ignore_errors=True)
        return final

    def load(self) -> dict[str, Any] | None:
        """The newest checkpoint whose digest matches and that loads; None if there is none.
        One that does not is skipped, saying so (`_say_unusable`)."""
        found = self.checkpoints()
        for index, path in enumerate(found):
            try:
                meta = json.loads((path / META).read_text())
                actual = sha256_file(path / STATE)
                if actual != meta["sha256"]:
                    raise ValueError(
                        f"sha256 {actual[:12]} differs from the recorded {meta['sha256'][:12]}"
                    )
                return torch.load(path / STATE, weights_only=True)
            except Exception as error:  # noqa: BLE001  (any damage means: use the one before)
                _say_unusable(path, error, found[index + 1 : index + 2])
        return None

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _say_unusable(path: Path, error: Exception, older: list[Path]) -> None:
    """One line on stderr, as the loops say "resuming from the checkpoint at step N" (a flow
    run's Prefect log takes it: log_prints), from the main process only. It was a Python
    warning: the file and line of the call, then that line of source, to a user who has
    nothing to debug, once per process of a launch."""
    if not main_process():
        return
    # The loop says "resuming from the checkpoint at step N" once one loads.
    then = "no older one: training from the start"
    if older:
        then = f"trying the one at step {int(older[0].name.removeprefix('step-'))}"
    why = next((line.strip() for line in str(error).splitlines() if line.strip()), repr(error))
    print(
        f"instructflow: warning: checkpoint {path} is unusable ({why}); {then}",
        file=sys.stderr,
        flush=True,
    )


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Every random state a CPU/GPU training step can draw from."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if generator is not None:
        state["generator"] = generator.get_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if generator is not None:
        generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def after_step(store: CheckpointStore | None, step: int, state_fn) -> None:
    """Call after each finished step (`step` counts finished steps): checkpoint when due; honour a stop request."""
    stopping = stop_requested()
    # Under `accelerate launch` every process holds the same state: rank 0 writes it.
    if store is not None and main_process() and (stopping or step % store.every == 0):
        store.save(step, state_fn())
    if stopping:
        kept = f"; checkpoint at step {step} kept" if store is not None else ""
        raise interrupt(f"stopped after step {step}{kept}")
