"""One process of a multi-process stage: `accelerate launch --module instructflow.tasks.launch_worker SPEC`.

Reads the function and arguments that instructflow.tasks.launch wrote, calls
the function with a `log` that records to the stage's MLflow run from rank
0 only, and leaves rank 0's result beside the spec. A failure leaves this
process's one-line message in `rank<N>.error` before the process exits;
`rank<N>.started` (its pid), `rank<N>.done` and `rank<N>.terminated` let the
launch tell a process that died without a word (SIGKILL) from the others.
"""

import os
import pickle
import signal
import sys
from pathlib import Path

RESULT = "result.pkl"
"""Rank 0's pickled return value, beside the spec (read back by instructflow.tasks.launch)."""


def _logger(spec: dict):
    """MLflow metrics of the stage's run (by id: this process has no active run), and a
    console line; and the function that writes what waits when the stage's function ends.

    Each step is written at once (torchrun ends this process with SIGTERM when another
    fails: a batch would be lost), through a BatchedLog, so that a lost tracking server
    does not stop training: its steps wait and go out once it is back."""
    from mlflow import MlflowClient

    from instructflow.tasks.batched_log import BatchedLog
    from instructflow.tasks.progress import Progress

    MlflowClient(spec["tracking_uri"])  # its store opened now, not at the first step's write
    batched = BatchedLog(flush_seconds=0.0, tracking_uri=spec["tracking_uri"])
    run_id = spec["run_id"]
    prefix = spec["log_prefix"]

    progress = Progress(spec["label"])
    console = spec.get("console") or (lambda metrics: metrics)

    def log(
        step: int, metrics: dict[str, float], total: int | None = None, unit: str = "step"
    ) -> None:
        named = {f"{prefix}/{k}" if prefix else k: float(v) for k, v in metrics.items()}
        clean = {k: v for k, v in named.items() if v == v}  # NaN is not logged
        if run_id is not None and clean:
            batched.add_metrics(run_id, clean, step)
        if (shown := console(metrics)) is not None:
            print(progress.line(step, shown, total, unit), flush=True)

    def flush(failed: bool) -> None:
        if run_id is None:
            return
        if not failed:  # its training is done: worth waiting for a lost server
            batched.wait_for_lost_store(run_id)
        batched.flush(run_id, quiet=failed)  # a failure's own error, not the store's

    return log, flush


def _mark_lifecycle(folder: Path, rank: int) -> None:
    """`rank<N>.started` now, `rank<N>.terminated` on SIGTERM (then the default end).

    torchrun ends the other processes with SIGTERM once one fails; a process
    that started and left no error, no `done` and no `terminated` died of what
    no handler sees (SIGKILL: the out-of-memory killer, a user's kill -9; a
    crash) and is the stage's cause, not the gloo errors it left the others.
    """

    def on_sigterm(signum: int, _frame) -> None:
        (folder / f"rank{rank}.terminated").touch()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    (folder / f"rank{rank}.started").write_text(str(os.getpid()))


def main(spec_path: str) -> None:
    from instructflow.tasks.launch_guard import die_with_parent

    # torchrun starts each process in a session of its own: a launcher killed outright
    # (SIGKILL: the OOM killer, kill -9) left them training as orphans, writing into the
    # stage's folder beside the task's retry. They now end with it (SIGTERM, Linux).
    launcher = os.getppid()
    die_with_parent()
    if os.getppid() != launcher:  # it died before the request was in place
        sys.exit(1)
    folder = Path(spec_path).parent
    rank = int(os.environ.get("RANK", "0"))
    _mark_lifecycle(folder, rank)
    spec = pickle.loads(Path(spec_path).read_bytes())
    log, flush_log = _logger(spec) if rank == 0 else (lambda *_: None, lambda failed: None)
    if rank != 0:
        # Rank 0 speaks for the stage: every process runs the same code, so the others'
        # console lines ("pretraining a ... GPT-2") would each show N times. Their errors
        # still reach stderr and rank<N>.error.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (open for the process's life)
    try:
        result = spec["fn"](**spec["kwargs"], log=log)
        flush_log(failed=False)
    except BaseException as error:
        from instructflow.tasks.stage import is_permanent

        message = (str(error).strip().splitlines() or [""])[0]
        if is_permanent(error):  # bad input: the task must not retry it
            (folder / f"rank{rank}.permanent").touch()
        (folder / f"rank{rank}.error").write_text(f"{type(error).__name__}: {message}\n")
        flush_log(failed=True)
        raise
    if rank == 0:
        partial = folder / (RESULT + ".part")
        partial.write_bytes(pickle.dumps(result))
        partial.replace(folder / RESULT)
    (folder / f"rank{rank}.done").touch()
    import torch.distributed

    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
