"""Calling a stage task from a flow: its cache key, its output folder, its nested MLflow run.

`run_stage` is the one way a flow runs a stage; `Stages` binds what every
training stage of one pipeline run shares (the run's parameters, its data
folder, its parent MLflow run, its thread count) so that the embedded world's
pipeline and a user's dataset key, time and launch their stages alike.
"""

import contextvars
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import torch
from prefect import get_run_logger

from instructflow.flows.params import PipelineParams
from instructflow.models.checkpoints import interrupt, stop_requested
from instructflow.tasks import (
    concurrency,
    interrupts,
    launch,
    ppo,
    ppo_selection,
    run_status,
    task_run_states,
    tracking,
)
from instructflow.tasks.stage import (
    DONE_MARKER,
    changed_output,
    content_digest,
    done_result,
    key_arguments,
    keyed_by_content,
    output_dir,
    relocated,
    stage_key,
)
from instructflow.world import layout


def run_stage(
    task,
    stage_name: str,
    config: dict,
    inputs: dict[str, str],
    parent_run_id: str,
    timings: dict[str, float] | None = None,
    stale_because: Callable[[dict], str | None] | None = None,
    cached: set[str] | None = None,
    keys: dict[str, str] | None = None,
    **kwargs,
) -> dict:
    """Call a stage task under its cache key; give a cached stage its nested MLflow run too.

    `stale_because(result)` names what no longer holds of a finished stage's
    result (the registry state it reported, say) or returns None; a stale
    result is recomputed rather than served.

    Wall seconds of the stage (cached or not) go to `timings[stage_name]` and to
    the parent run as metric `stage_seconds/<stage>`; a stage Prefect served from
    its cache is added to `cached`, so the flow can say so (the report) and redo
    what the stage's task did in its own flow run only (its Prefect artifacts);
    its cache key goes to `keys[stage_name]`.

    Once a stop was requested (SIGINT/SIGTERM) no stage starts, cached or not: the
    interrupt a training loop raises ends the run here, whatever the stage before
    did with the request.
    """
    run_status.at_stage(stage_name)
    if stop_requested():
        raise interrupt(f"stopped before stage {stage_name} started")
    started = time.perf_counter()
    key = stage_key(stage_name, task.version, config, inputs)
    if keys is not None:
        keys[stage_name] = key
    out_dir = output_dir(key)
    stale, reason = _stale(out_dir, stale_because)
    if stale:
        # Another run may be computing this very stage (the same parameters again, as a
        # schedule's run overlapping the one before): wait for it, then look again, so
        # its folder is neither emptied under it nor computed twice. Training slot first.
        slot = (
            concurrency.training_slot()
            if concurrency.takes_training_slot_declared(task)
            else nullcontext()
        )
        with slot, concurrency.stage_lock(key):
            stale, reason = _stale(out_dir, stale_because)
            state = _call(task, stage_name, stale, reason, out_dir, parent_run_id, kwargs)
    else:
        state = _taken_from_folder(task, stage_name, key, out_dir)
        if state is None:
            state = _call(task, stage_name, stale, reason, out_dir, parent_run_id, kwargs)
    result = relocated(state.result(), out_dir)
    if state.name == "Cached":
        tags = tracking.cached_stage_tags(key, result.get("mlflow_run_id", ""))
        with tracking.stage_run(stage_name, parent_run_id, tags=tags):
            tracking.log_metrics(result.get("metrics", {}))
        if cached is not None:
            cached.add(stage_name)
    seconds = round(time.perf_counter() - started, 2)  # MLflow showed 16 digits
    if timings is not None:
        timings[stage_name] = seconds
    tracking.log_stage_seconds(parent_run_id, stage_name, seconds)
    get_run_logger().info("stage %s: %s (%s) in %.1f s", stage_name, state.name, key, seconds)
    return result


# The embedded world's stages keyed by the tables they read rather than by the whole
# data version (which later stages keep: they read more of data/ than is listed here), so
# new preference data re-runs comparisons and what follows, not these.
READS = {
    "base_model": (layout.PRETRAIN_TRAIN, layout.PRETRAIN_VALID, layout.SFT_TRAIN),  # tokenizer
    "sft": (layout.SFT_TRAIN, layout.SFT_VALID),
    "flan": (layout.FLAN_MIXTURE,),
    "t0": (layout.T0_MIXTURE,),
}


def _own_tables(name: str, inputs: dict, profile_dir: Path) -> dict:
    """`inputs` with the whole data version (`data_md5`) replaced by the content digest of
    each table stage `name` reads, for the stages of READS; other inputs as they are."""
    if name not in READS or "data_md5" not in inputs:
        return inputs
    narrowed = {k: v for k, v in inputs.items() if k != "data_md5"}
    return narrowed | {rel: content_digest(profile_dir / rel) for rel in READS[name]}


def _stale(out_dir: Path, stale_because) -> tuple[bool, str | None]:
    """Whether a stage's folder must be computed again, and why (None: never finished)."""
    # Outputs deleted, changed or never finished: recompute even if Prefect remembers a result.
    finished = (out_dir / DONE_MARKER).exists()
    reason = changed_output(out_dir) if finished else None
    stale = not finished or reason is not None
    if not stale and stale_because is not None:
        reason = stale_because(done_result(out_dir))
        stale = reason is not None
    return stale, reason


def _taken_from_folder(task, stage_name: str, key: str, out_dir: Path):
    """A Cached state for a finished stage (its files as written) whose result Prefect's
    store no longer holds (`runs/prefect-results/` deleted, or on another machine), from
    the stage's own record (`DONE.json`); None while the store holds it. Called, the task
    found no result and emptied the folder to compute it again: every stage trained anew.
    The result is written back, so the next run is Prefect's own cache hit again."""
    from prefect.results import get_result_store
    from prefect.states import Completed

    store = get_result_store().update_for_task(task)
    if store.exists(key):
        return None
    result = done_result(out_dir)
    try:
        store.write(result, key=key)
    except OSError:  # a read-only store: the folder serves the next run too
        pass
    get_run_logger().info(
        "stage %s: Prefect's result store lost its result; taken from %s", stage_name, out_dir
    )
    return Completed(data=result, name="Cached")  # as Prefect names a cache hit


def _call(task, stage_name: str, stale: bool, reason, out_dir: Path, parent_run_id, kwargs):
    if reason:
        get_run_logger().warning(
            "stage %s: recomputed, its cached result is stale: %s", stage_name, reason
        )
    # Named by its stage (the FLAN and T0 baselines are SFT's task, PPO-ptx is PPO's).
    task = task.with_options(refresh_cache=stale, task_run_name=stage_name)
    state = task(out_dir=str(out_dir), parent_run_id=parent_run_id, **kwargs, return_state=True)
    task_run_states.record(stage_name, state)  # told the server again if it missed it (lost)
    return state


def with_every_stage(stage_keys: dict[str, str], keys: dict[str, str]) -> dict[str, str]:
    """A report's `stage_keys` (by policy, with the RM's, the judge's and the evaluation's)
    with the key of every other stage that ran (`keys`: the data stage, the comparisons),
    by stage name, so that every row of report.md's stage table has its key. A stage whose
    key is there under a policy's name (base_model's, as base) is not repeated."""
    known = set(stage_keys.values())
    others = {name: key for name, key in keys.items() if name not in stage_keys}
    return stage_keys | {name: key for name, key in others.items() if key not in known}


def note_kept_start(gate: dict, candidate: str, metrics: dict) -> None:
    """Say so, in the log and the report's gate block, when the candidate is SFT's weights."""
    note = ppo_selection.kept_start_note(candidate, metrics)
    if note:
        gate["candidate_note"] = note
        get_run_logger().warning(note)


A = TypeVar("A")
B = TypeVar("B")


def lanes(params: PipelineParams, threads: int) -> int:
    """2 where a run of `params` on `threads` threads runs independent stages side by side:
    `side_by_side` (empty: not on smoke), 2+ threads, one process per stage, no accelerator."""
    on = params.wants_side_by_side and threads >= 2 and params.processes == 1
    return 2 if on and not torch.cuda.is_available() else 1


@dataclass
class Stages:
    """The stages of one pipeline run: `stages(task, name, config_name, inputs, **kwargs)`."""

    params: PipelineParams
    profile_dir: Path
    parent_run_id: str
    threads: int
    timings: dict[str, float] = field(default_factory=dict)
    """stage -> wall seconds (the report's run.stage_seconds)."""
    cached: set[str] = field(default_factory=set)
    """The stages Prefect served from its cache (the report's run.cached_stages)."""
    keys: dict[str, str] = field(default_factory=dict)
    """stage -> its cache key (with_every_stage: the report's run.stage_keys)."""

    def __call__(
        self, task, name: str, config_name: str | None, inputs: dict, stale_because=None, **kwargs
    ) -> dict:
        """Run stage `name` with the run's settings for `config_name` (None: a stage without
        settings), on `inputs` (what its result depends on besides code and settings);
        `stale_because` as in run_stage."""
        params = self.params
        config = params.stage(config_name) if config_name else None
        if params.processes > 1 and launch.takes_processes(name, kwargs):  # 1: keys as before
            kwargs["processes"] = params.processes
        key_config = {
            "config": keyed_by_content(config.model_dump()) if config else None,
            "seed": params.seed,
            "threads": self.threads,  # it changes how float sums round: part of the result
            **key_arguments(kwargs),
        }
        extra = {"cfg": config} if config is not None else {}
        inputs = _own_tables(name, inputs, self.profile_dir)
        common = {"profile_dir": str(self.profile_dir), "seed": params.seed}
        return run_stage(
            task, name, key_config, inputs, self.parent_run_id, self.timings, stale_because,
            self.cached, self.keys, **common, **extra, **kwargs,
        )  # fmt: skip

    def lanes(self) -> int:
        """2 where independent work runs side by side (see side_by_side), else 1."""
        return lanes(self.params, self.threads)

    def side_by_side(
        self, first: Callable[["Stages"], A], second: Callable[["Stages"], B]
    ) -> tuple[A, B]:
        """`first(lane)` and `second(lane)` at the same time, each lane with half the threads.

        Stages that do not depend on each other (the FLAN- and T0-style baselines
        beside SFT -> RM, for example) take one core each on a 2-core
        machine instead of sharing both: at these model sizes one op cannot keep
        two cores busy, so two stages at one thread each finish sooner than one
        after the other at two. `first` runs here; `second` in a thread whose
        training stages each run in a process of their own (tasks.launch.own_process):
        torch's random generator and thread settings are per process, so each
        stage computes exactly what it computes alone at the lane's threads
        (which its cache key records). The run holds one training slot for both.

        With `side_by_side` False (unset: False on smoke only), fewer than 2 threads,
        several processes per stage or an accelerator: one after the other, every
        thread each.
        """
        if self.lanes() < 2:
            return first(self), second(self)
        lane = replace(self, threads=self.threads // 2)  # the same timings, cached and keys

        def in_own_processes() -> B:
            with launch.own_process(lane.threads):
                return second(lane)

        with concurrency.training_slot(), ThreadPoolExecutor(1, "stage-lane") as pool:
            beside = pool.submit(contextvars.copy_context().run, in_own_processes)
            torch.set_num_threads(lane.threads)
            try:
                here = first(lane)
            finally:
                torch.set_num_threads(self.threads)
                interrupts.wait_awake(beside)  # a signal meanwhile still reaches its handler
                there = beside.result()  # also waits (and re-raises) when first() failed
        return here, there

    def ppo(
        self, name: str, ptx_gamma: float, inputs: dict, sft_dir: str, rm_dir: str
    ) -> dict[str, dict]:
        """PPO stage `name` ({name: result}): the SFT model trained against the RM."""
        result = self(
            ppo.ppo_task,
            name,
            "ppo",
            inputs,
            stage=name,
            sft_dir=sft_dir,
            rm_dir=rm_dir,
            ptx_gamma=ptx_gamma,
        )
        return {name: result}
