"""How a stopped seed sweep stops its seeds: their processes, and the MLflow runs they leave.

A sweep stops on a signal (Ctrl-C reaches every process of the sweep; a
scheduler's SIGTERM to its PID reaches the sweep alone) or on a seed's
failure. Its seeds must not train on while it says it stopped, their pool's
idle processes must survive the signals it sends, and no MLflow run of
theirs may stay RUNNING.
"""

import signal
import time

from mlflow import MlflowClient
from prefect.task_runners import ProcessPoolTaskRunner

from instructflow.models.checkpoints import request_stop
from instructflow.tasks import interrupts
from instructflow.tasks.run_tree import end_running_below

# A stopped sweep's seeds: how long they have to stop on their own (Ctrl-C reached them too:
# each ends its step, its MLflow run KILLED), then after SIGTERM before SIGKILL (longer than
# the seeds' own grace, stop_on_signals' 8 s, so that a seed's runs end KILLED, not RUNNING).
SEEDS_STOP_SECONDS = (10.0, 12.0)


def stop_seeds(futures: list, processes: set, waits: tuple[float, float] = SEEDS_STOP_SECONDS):
    """Make sure no seed trains on once the sweep has stopped (a signal or a seed's failure).

    Prefect's task runner, as the flow ends, waits for every running seed to finish: a seed
    that had missed the Ctrl-C (it came while the seed was starting) trained on to its end
    while the sweep said nothing, and a SIGTERM to the sweep alone never reached its seeds.
    Those still running get SIGTERM (at once after a SIGTERM to the sweep, which the seeds
    did not hear), then SIGKILL; a seed killed so breaks the pool, which ends the others'
    futures."""
    sweep_alone = interrupts.received[:1] == [signal.SIGTERM]
    waits = (0.0 if sweep_alone else waits[0], waits[1])
    for signal_them, wait in zip(("terminate", "kill"), waits, strict=True):
        if _all_done_within(futures, wait):
            return
        for process in processes:
            getattr(process, signal_them)()
    for process in processes:  # gone before close_seed_runs looks at what they left
        process.join(timeout=5)


def close_seed_runs(sweep_id: str, logger) -> None:
    """End KILLED the MLflow runs a stopped seed left RUNNING (SIGKILLed mid-stage, or its
    handler too slow on a loaded machine), so that no run of a stopped sweep looks alive."""
    try:
        ended = end_running_below(MlflowClient(), sweep_id)
    except Exception as error:  # noqa: BLE001  (the store may be why the sweep stopped)
        logger.warning("could not close the seeds' unfinished MLflow runs: %s", error)
        return
    if ended:
        logger.warning("ended %d MLflow run(s) its seeds left RUNNING: %s", len(ended), ended)


def _all_done_within(futures: list, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not all(f.wrapped_future.done() for f in futures):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _seeds_remember_signals_between_runs() -> None:
    """A pool process's start (ProcessPoolTaskRunner's initializer): SIGINT and SIGTERM do
    not end it, as an idle pool process that one killed broke the pool, and the pool then
    killed the seeds still stopping, their MLflow runs left RUNNING (stop_seeds signals every
    seed process). They ask for a stop instead: a seed that was starting when the signal came
    (before seed_run's own handlers) then stops before its first stage, rather than train on
    until stop_seeds' SIGKILL, and a seed the pool starts after it does too."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _ask_for_a_stop)


def _ask_for_a_stop(_signum: int, _frame) -> None:
    request_stop()


def seed_pool(workers: int) -> ProcessPoolTaskRunner:
    return ProcessPoolTaskRunner(
        max_workers=workers, initializer=_seeds_remember_signals_between_runs
    )
