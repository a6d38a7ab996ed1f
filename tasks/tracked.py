"""The frame every stage task runs in: its output folder, its MLflow run, its done marker.

    with tracked_stage("sft", out_dir, parent_run_id, params, training=True) as stage:
        metrics = ...                            # the stage's work, writing into stage.out
        stage.log_model()
        return stage.done(metrics, model_dir=str(stage.out / "model"))

A training stage (`training=True`) keeps an unfinished attempt's resume
checkpoints (instructflow.tasks.checkpoints), takes a training slot (the
Prefect concurrency limit that keeps two trainings off the same cores),
names itself in a non-finite-value error, and drops its checkpoints once
done. Any other stage starts from an empty folder. Either way its result is a
StageResult written last (DONE.json): a stage without one is unfinished and
runs again.
"""

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import mlflow

from instructflow.models.numeric import in_stage
from instructflow.tasks import checkpoints, tracking
from instructflow.tasks.concurrency import training_slot
from instructflow.tasks.stage import fresh_output_dir
from instructflow.tasks.tracking import finish_stage

ADAPTER = "adapter"
"""Where a LoRA stage saves its adapter and config, beside the merged model/."""


class StageResult(TypedDict):
    """What a stage returns (and DONE.json holds): its MLflow run, its metrics, its outputs."""

    mlflow_run_id: str
    metrics: dict[str, float]
    model_dir: NotRequired[str]
    """A checkpoint the next stages load (base model, SFT, RM, PPO)."""
    dir: NotRequired[str]
    """The stage's output folder, for stages whose output is files (comparisons, judge, evaluation)."""


@dataclass
class TrackedStage:
    out: Path
    """The stage's output folder, runs/<stage>/<key>/."""
    run: mlflow.ActiveRun

    def log_model(self, artifact_path: str = "model") -> None:
        """The model/ checkpoint, and a LoRA adapter if the stage trained one, as run artifacts
        (a tracking server lost while the stage trained is waited for first: BatchedLog)."""
        tracking.batched.wait_for_lost_store(self.run.info.run_id)
        mlflow.log_artifacts(str(self.out / "model"), artifact_path=artifact_path)
        if (self.out / ADAPTER).exists():
            mlflow.log_artifacts(str(self.out / ADAPTER), artifact_path=ADAPTER)

    def done(self, metrics: dict[str, float], **outputs: Any) -> StageResult:
        """Log the metrics, end the run, then mark the stage done with its outputs: nothing
        may fail after.

        The run ends first: a marker written before a failed end would be wiped, finished
        work and all, by the retry (a folder marked done is emptied), its run left RUNNING.
        """
        run_id = self.run.info.run_id
        tracking.batched.wait_for_lost_store(run_id)
        tracking.log_final_metrics(run_id, metrics)
        result = {**outputs, "mlflow_run_id": run_id, "metrics": metrics}
        return finish_stage(self.out, run_id, result)


@contextmanager
def tracked_stage(
    name: str,
    out_dir: str | Path,
    parent_run_id: str | None,
    params: dict[str, Any],
    training: bool = False,
) -> Iterator[TrackedStage]:
    """Run a stage in its output folder under a nested MLflow run that logs `params`."""
    with ExitStack() as stack:
        if training:
            stack.enter_context(in_stage(name))
            stack.enter_context(training_slot())
        # Only once the slot is held: a run waiting for it must not empty the folder
        # of the same stage that the slot's holder is writing.
        out = checkpoints.prepare_out_dir(out_dir) if training else fresh_output_dir(out_dir)
        run = stack.enter_context(tracking.stage_run(name, parent_run_id))
        tracking.batched.add_params(run.info.run_id, params)
        yield TrackedStage(out, run)
    if training:
        checkpoints.finish(out)  # done: its checkpoints are of no more use
