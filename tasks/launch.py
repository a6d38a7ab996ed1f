"""Run a training stage's plain function under `accelerate launch --num_processes N`.

With `processes == 1` the function runs here, in the Prefect task's own
process, as it always has; inside `own_process(threads)` (a stage running
beside another one, flows/stages.py) it runs in one fresh process of its own
with that many threads instead, so that two stages never share the process's
torch state (its global random generator above all). With N > 1 the task starts Accelerate's launcher
(torchrun underneath: NCCL on GPUs, gloo on CPU) on
`instructflow.tasks.launch_worker`, which calls the same function in every
process. The function's arguments travel in a pickle under the stage's
output folder; rank 0 alone logs metrics (to the stage's MLflow run, opened
by the task) and writes checkpoints and the result, which the task reads
back. When any process fails, torchrun stops the others and the stage fails
with that process's message, in one line.
"""

import contextlib
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import mlflow
import torch

from instructflow.models.checkpoints import STOP_FILE_ENV, interrupt, stop_requested
from instructflow.models.distributed import LAUNCHED_ENV
from instructflow.tasks import tracking
from instructflow.tasks.launch_worker import RESULT

FOLDER = "launch"
SPEC = "spec.pkl"
STOP = "stop"
WORKER = "instructflow.tasks.launch_worker"
GUARD = "instructflow.tasks.launch_guard"
STAGES = frozenset({"base_model", "sft", "flan", "t0", "reward_model", "ppo", "ppo_ptx"})
"""Pipeline stages whose task takes `processes` (the rest run in the task's process)."""


def takes_processes(stage: str, kwargs: dict[str, Any]) -> bool:
    """Whether pipeline stage `stage`, called with `kwargs`, trains under `processes`.

    A given base model (`base_model=<folder or id>`) is copied, not pretrained:
    launching N processes to copy a folder costs seconds of start-up for nothing,
    and `processes` in its key would make a copy done once count as another stage.
    """
    return stage in STAGES and not (stage == "base_model" and kwargs.get("base_model"))


_OWN_PROCESS: ContextVar[int | None] = ContextVar("instructflow_own_process", default=None)


@contextlib.contextmanager
def own_process(threads: int) -> Iterator[None]:
    """Inside, a one-process stage runs in a fresh process of its own with `threads` threads."""
    token = _OWN_PROCESS.set(threads)
    try:
        yield
    finally:
        _OWN_PROCESS.reset(token)


class ProcessFailed(RuntimeError):
    """A process of a multi-process stage failed (its message), or the launcher did."""


class ProcessInputError(ProcessFailed, ValueError):
    """A process failed on bad input: like the error it stands for, it is not retried."""


def run(
    fn: Callable[..., Any],
    kwargs: dict[str, Any],
    *,
    processes: int,
    work_dir: Path,
    log: Callable[[int, dict[str, float]], None],
    log_prefix: str | None,
    label: str | None = None,
    console: Callable[[dict[str, float]], dict[str, float] | None] | None = None,
) -> Any:
    """`fn(**kwargs, log=log)` here (one process), or rank 0's result of it under N processes.

    In the launched processes `log` is rebuilt as an MLflow logger of the
    active run (keys prefixed with `log_prefix`) in rank 0, and as nothing
    elsewhere: the run and its parent stay the task's. `label` names the
    stage in the console lines (default: the prefix); `console` (a module-level
    function: it travels pickled) picks a line's figures from a log call's
    metrics, None for no line, as `log` does here (default: every figure).
    """
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    warn_oversubscribed(processes, torch.get_num_threads())  # however the run was started
    threads = _OWN_PROCESS.get()
    if processes == 1 and threads is None:
        return fn(**kwargs, log=log)
    folder = work_dir / FOLDER
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    run_info = mlflow.active_run()
    spec = {
        "fn": fn,
        "kwargs": kwargs,
        "run_id": run_info.info.run_id if run_info is not None else None,
        "tracking_uri": tracking.tracking_uri(),
        "log_prefix": log_prefix,
        "label": label or log_prefix or "stage",
        "console": console,
    }
    (folder / SPEC).write_bytes(pickle.dumps(spec))
    if processes == 1:
        command, env = [sys.executable, "-m", WORKER, str(folder / SPEC)], _own_env(threads)
    else:
        command, env = launch_command(processes, folder / SPEC), _env()
    returncode = _wait(command, env, folder / STOP)
    if returncode != 0 and stop_requested():
        raise interrupt(f"stopped during a {processes}-process stage; its last checkpoint is kept")
    if returncode != 0:
        message, permanent = _failure(folder, processes, returncode)
        raise (ProcessInputError if permanent else ProcessFailed)(message)
    result = pickle.loads((folder / RESULT).read_bytes())
    shutil.rmtree(folder, ignore_errors=True)
    return result


def oversubscribed(processes: int, threads: int) -> str | None:
    """A warning when `processes` CPU processes would share fewer threads (no GPU), else None.

    Each process gets `threads // processes` threads but at least one, so
    above `threads` they contend for the cores: slower than fewer processes.
    """
    if processes <= threads or torch.cuda.is_available():
        return None
    return (
        f"processes = {processes} is more than the {threads} CPU threads this run may use"
        f" (no GPU): each process gets 1 thread and they share {threads}, which is slower than"
        f" --processes {threads}"
    )


_warned: set[tuple[int, int]] = set()


def warn_oversubscribed(processes: int, threads: int) -> None:
    """`oversubscribed`'s warning on stderr (in a flow run, its Prefect log: log_prints), once
    per process for a setting: `instructflow run` says it before the run starts, its stages
    do not repeat it, and a run the Prefect form or API started says it at its first stage."""
    warning = oversubscribed(processes, threads)
    if warning and (processes, threads) not in _warned:
        _warned.add((processes, threads))
        print(f"instructflow: warning: {warning}", file=sys.stderr, flush=True)


def dropout_fields(config: Any) -> dict[str, float]:
    """The dropout probabilities above 0 in a model config (resid_pdrop, attention_dropout,
    ...); GPT-2's summary_* fields belong to its double-heads model, which no stage trains."""
    return {
        name: value
        for name, value in config.to_dict().items()
        if "drop" in name
        and not name.startswith("summary_")
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and value > 0
    }


def dropout_differs(processes: int, config: Any) -> str | None:
    """A warning when N processes will not compute what one does (docs/scale.md, Several
    processes: "within float rounding"): with dropout each process draws its own masks for
    its shard of a batch, where one process draws one set for the whole batch."""
    dropout = dropout_fields(config)
    if processes <= 1 or not dropout:
        return None
    named = ", ".join(f"{name} {value:g}" for name, value in sorted(dropout.items()))
    return (
        f"the base model trains with dropout ({named}) and processes = {processes}: each"
        " process draws its own dropout masks, so this run's figures will not match"
        " --processes 1's within float rounding (they differ as runs with other dropout draws"
        " do); set those fields to 0 in the base model's config.json for runs that must match"
    )


_warned_dropout: set[tuple[int, str]] = set()


def warn_dropout_differs(processes: int, base_model: str | None) -> None:
    """`dropout_differs`' warning on stderr for a local base model folder, once per process
    for a setting (`instructflow run` says it before the run starts, the flow again only for
    a run the Prefect form or API started). The embedded GPT-2 trains without dropout."""
    if not base_model or processes <= 1 or (processes, base_model) in _warned_dropout:
        return
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(Path(base_model).expanduser(), local_files_only=True)
    except (OSError, ValueError):  # no readable config: the input checks refuse it, not this
        return
    warning = dropout_differs(processes, config)
    _warned_dropout.add((processes, base_model))
    if warning:
        print(f"instructflow: warning: {warning}", file=sys.stderr, flush=True)


def launch_command(processes: int, spec: Path) -> list[str]:
    """`python -m accelerate.commands.launch ... --module instructflow.tasks.launch_worker SPEC`.

    `--multi_gpu` selects torchrun; on a machine without CUDA the environment
    says ACCELERATE_USE_CPU (see `_env`), and Accelerate then joins the
    processes with gloo. Each process gets its share of this process's threads.
    """
    threads = max(1, torch.get_num_threads() // processes)
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",  # each stage's Accelerator sets its own precision
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        "--num_cpu_threads_per_process",
        str(threads),
        "--module",
        WORKER,
        str(spec),
    ]


def _wait(command: list[str], env: dict[str, str], stop_file: Path) -> int:
    """Run the launcher in its own session; pass a stop request on; leave no process behind.

    A stop request (SIGINT/SIGTERM, instructflow.tasks.interrupts) becomes
    `stop_file`, which the processes' training loops poll as their own
    request. Anything raised here while they run (the interrupt's grace
    period ending, Prefect cancelling the run) ends the whole session, the
    launcher and every process it started, before it propagates.
    """
    env = env | {STOP_FILE_ENV: str(stop_file)}
    guarded = [sys.executable, "-m", GUARD, str(os.getpid()), *command]  # ends if we are killed
    launcher = subprocess.Popen(guarded, env=env, start_new_session=True)
    try:
        while launcher.poll() is None:
            if stop_requested() and not stop_file.exists():
                stop_file.touch()
            time.sleep(0.2)
    except BaseException:
        _end_session(launcher)
        raise
    return launcher.returncode


def _end_session(launcher: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(launcher.pid, sig)
            launcher.wait(wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def _env() -> dict[str, str]:
    env = dict(os.environ) | {LAUNCHED_ENV: "1"}
    if not torch.cuda.is_available():
        env["ACCELERATE_USE_CPU"] = "true"
    return env


def _own_env(threads: int) -> dict[str, str]:
    """One process, not launched by Accelerate (no process group): `threads` torch threads."""
    return dict(os.environ) | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _failure(folder: Path, processes: int, returncode: int) -> tuple[str, bool]:
    """The first failing process's message (its error file written first), in one line; bad input?"""
    silent = [
        started.stem.removeprefix("rank")
        for started in sorted(folder.glob("rank*.started"))
        if not any(started.with_suffix(s).exists() for s in (".error", ".done", ".terminated"))
    ]
    if silent:  # its death is what made the others fail (gloo: "Connection closed by peer")
        return (
            f"process {silent[0]} of {processes} ended without an error of its own (killed by"
            " SIGKILL, e.g. the out-of-memory killer or kill -9, or crashed); the others"
            " stopped with it"
        ), False
    errors = sorted(folder.glob("rank*.error"), key=lambda p: p.stat().st_mtime)
    if not errors:
        message = f"accelerate launch of {processes} processes exited with code {returncode}"
        return message + " (no process reported an error)", False
    first = errors[0]
    rank = first.stem.removeprefix("rank")
    message = f"process {rank} of {processes} failed: {first.read_text().strip()}"
    return message, first.with_suffix(".permanent").exists()
