"""What a stage run logs, written to MLflow in a few batches rather than one write per call.

Each write to the store costs milliseconds of the stage's own time (with
SQLite, a transaction); a training stage logs its settings, tens to hundreds
of steps and its final figures. Here they wait, each with the time it was
logged, and go out in one `log_batch`: when the run logs again FLUSH_SECONDS
or more after the oldest waiting one (so MLflow's charts follow a long stage
as it runs), when a stage has its result (before it is marked done), and when
the run's block ends (tracking.closing_run).
"""

import threading
import time

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

MAX_PARAMS = 100  # MLflow's limits for one log_batch
MAX_ENTRIES = 1000


class BatchedLog:
    FLUSH_SECONDS = 5.0

    def __init__(self) -> None:
        self._metrics: dict[str, list[Metric]] = {}  # run id -> metrics not yet written
        self._params: dict[str, list[Param]] = {}  # run id -> params not yet written
        # run id -> metrics written only when the run's block ends (add_closing_metrics)
        self._closing: dict[str, list[Metric]] = {}
        self._oldest: dict[str, float] = {}  # run id -> when its oldest waiting entry came
        self._lock = threading.Lock()  # stages of two lanes log from two threads

    def add_params(self, run_id: str, params: dict) -> None:
        """The run's settings, as `mlflow.log_params` would write them (values as text)."""
        with self._lock:
            self._params.setdefault(run_id, []).extend(Param(k, str(v)) for k, v in params.items())
            self._oldest.setdefault(run_id, time.monotonic())

    def add_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        stamp = int(time.time() * 1000)
        with self._lock:
            waiting = self._metrics.setdefault(run_id, [])
            waiting += [Metric(k, v, stamp, step) for k, v in metrics.items()]
            oldest = self._oldest.setdefault(run_id, time.monotonic())
        if time.monotonic() - oldest >= self.FLUSH_SECONDS:
            self.flush(run_id)

    def add_closing_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        """Metrics written after every other when the run's block ends (flush with
        `closing`): MLflow's run Overview lists metrics in the order each was first
        logged, so these (a pipeline's stage seconds) come after its figures."""
        stamp = int(time.time() * 1000)
        with self._lock:
            waiting = self._closing.setdefault(run_id, [])
            waiting += [Metric(k, v, stamp, 0) for k, v in metrics.items()]

    def flush(self, run_id: str, quiet: bool = False, closing: bool = False) -> None:
        """Write what waits for `run_id`, with its closing metrics if `closing` (its block
        ends); `quiet`: drop it if the store refuses."""
        with self._lock:
            metrics = self._metrics.pop(run_id, [])
            metrics += self._closing.pop(run_id, []) if closing else []
            params = self._params.pop(run_id, [])
            self._oldest.pop(run_id, None)
        try:
            while metrics or params:
                batch_params, params = params[:MAX_PARAMS], params[MAX_PARAMS:]
                room = MAX_ENTRIES - len(batch_params)
                batch_metrics, metrics = metrics[:room], metrics[room:]
                MlflowClient().log_batch(run_id, metrics=batch_metrics, params=batch_params)
        except Exception:
            if not quiet:
                raise
