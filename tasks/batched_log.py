"""What a stage run logs, written to MLflow in a few batches rather than one write per call.

Each write to the store costs milliseconds of the stage's own time (with
SQLite, a transaction); a training stage logs its settings, tens to hundreds
of steps and its final figures. Here they wait, each with the time it was
logged, and go out in one `log_batch`: when the run logs again FLUSH_SECONDS
or more after the oldest waiting one (so MLflow's charts follow a long stage
as it runs), when a stage has its result (before it is marked done), and when
the run's block ends (tracking.closing_run).

A tracking server lost while a stage trains does not stop the training: the
steps it could not write wait here, the server is looked for again every
RETRY_SECONDS (a one-second /health request, not MLflow's 15 s of retries),
and they go out once it answers. When training is over, the stage waits
(outages.wait_until_answering) for it before logging its model (`wait_for_lost_store`:
also for a server lost after the last step was written); a server still gone then
fails the stage as any lost service does.
"""

import os
import threading
import time

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from instructflow.tasks import outages

MAX_PARAMS = 100  # MLflow's limits for one log_batch
MAX_ENTRIES = 1000


class BatchedLog:
    FLUSH_SECONDS = 5.0
    RETRY_SECONDS = 30.0  # while the server is lost: how often training looks for it again

    def __init__(self, flush_seconds: float | None = None, tracking_uri: str | None = None):
        """Defaults: FLUSH_SECONDS, and MLflow's tracking URI of the moment (a launched
        process passes its stage's URI and 0 s: every step at once, tasks/launch_worker.py)."""
        if flush_seconds is not None:
            self.FLUSH_SECONDS = flush_seconds
        self._tracking_uri = tracking_uri
        self._metrics: dict[str, list[Metric]] = {}  # run id -> metrics not yet written
        self._params: dict[str, list[Param]] = {}  # run id -> params not yet written
        # run id -> metrics written only when the run's block ends (add_closing_metrics)
        self._closing: dict[str, list[Metric]] = {}
        self._oldest: dict[str, float] = {}  # run id -> when its oldest waiting entry came
        self._lock = threading.Lock()  # stages of two lanes log from two threads
        self._lost: dict[str, float] = {}  # run id -> when to look for its lost server again

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
            self._flush_while_training(run_id)

    def _flush_while_training(self, run_id: str) -> None:
        """Flush, unless the server is lost: then the steps wait and training goes on."""
        retry_at = self._lost.get(run_id)
        if retry_at is not None:
            if time.monotonic() < retry_at:
                return
            if not outages.server_answers(self._uri()):
                self._lost[run_id] = time.monotonic() + self.RETRY_SECONDS
                return
        try:
            self.flush(run_id, keep_if_lost=True)
        except _StoreLost as lost:
            if retry_at is None:
                print(
                    f"warning: the MLflow tracking server is lost ({lost}); training "
                    f"goes on, its step metrics wait and are written once it answers (looked "
                    f"for every {self.RETRY_SECONDS:.0f} s)",
                    flush=True,
                )
            self._lost[run_id] = time.monotonic() + self.RETRY_SECONDS
            return
        if retry_at is not None:
            del self._lost[run_id]
            print(
                f"the MLflow tracking server ({self._uri()}) is back: waiting steps written",
                flush=True,
            )

    def wait_for_lost_store(self, run_id: str) -> None:
        """At a stage's end, before it logs its model and figures: a server that does not
        answer (lost while the stage trained, or just now) gets outages.OUTAGE_WAIT_SECONDS
        to come back, rather than the stage's finished work being lost with MLflow's 15 s."""
        why, server = "the stage's work is done and waits to be logged there", self._uri()
        if self._lost.pop(run_id, None) is not None:  # known lost: no need to ask first
            outages.wait_until_answering("the MLflow tracking server", server, why)
        else:
            outages.wait_if_not_answering("the MLflow tracking server", server, why)

    def add_closing_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        """Metrics written after every other when the run's block ends (flush with
        `closing`): MLflow's run Overview lists metrics in the order each was first
        logged, so these (a pipeline's stage seconds) come after its figures."""
        stamp = int(time.time() * 1000)
        with self._lock:
            waiting = self._closing.setdefault(run_id, [])
            waiting += [Metric(k, v, stamp, 0) for k, v in metrics.items()]

    def flush(
        self, run_id: str, quiet: bool = False, closing: bool = False, keep_if_lost: bool = False
    ) -> None:
        """Write what waits for `run_id`, with its closing metrics if `closing` (its block
        ends); `quiet`: drop it if the store refuses; `keep_if_lost`: if the server is lost,
        what was not written waits again (raises _StoreLost)."""
        with self._lock:
            metrics = self._metrics.pop(run_id, [])
            metrics += self._closing.pop(run_id, []) if closing else []
            params = self._params.pop(run_id, [])
            self._oldest.pop(run_id, None)
            if closing:  # the run's block ends: nothing more to look for
                self._lost.pop(run_id, None)
        batch_metrics, batch_params = [], []
        try:
            while metrics or params:
                batch_params, params = params[:MAX_PARAMS], params[MAX_PARAMS:]
                room = MAX_ENTRIES - len(batch_params)
                batch_metrics, metrics = metrics[:room], metrics[room:]
                MlflowClient(self._tracking_uri).log_batch(
                    run_id, metrics=batch_metrics, params=batch_params
                )
        except Exception as error:
            lost = keep_if_lost and outages.lost_service_message(error, self._uri())
            if lost:
                self._put_back(run_id, batch_metrics + metrics, batch_params + params)
                raise _StoreLost(outages.cause_in_words(str(error))) from error
            if not quiet:
                raise

    def _put_back(self, run_id: str, metrics: list[Metric], params: list[Param]) -> None:
        """Unwritten entries, ahead of any logged since (steps stay in order)."""
        with self._lock:
            self._metrics[run_id] = metrics + self._metrics.get(run_id, [])
            self._params[run_id] = params + self._params.get(run_id, [])
            self._oldest.setdefault(run_id, time.monotonic())

    def _uri(self) -> str:
        return self._tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")


class _StoreLost(Exception):
    """flush(keep_if_lost=True) found the server lost; what it could not write waits again."""
