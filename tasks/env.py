"""The environment a pipeline run sets for Prefect, Hugging Face and DVC, unless you did.

Importing a project module never changes the process's environment. The
`instructflow` command line calls `apply_defaults()` first thing, before it
imports Prefect (which reads its settings once, when it is imported), and the
flows call it at their start (in a deployment run Prefect is already imported
by then: the worker's environment decides its settings; `make serve` starts
the worker with these defaults). Your own code calls it, or sets what it
needs, before importing Prefect or transformers.

Every variable is set only when unset: anything you export wins.
`python -m instructflow.tasks.env` prints them as shell `export` lines.
"""

import os
import shlex
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from instructflow.tasks.paths import project_root, runs_dir


def defaults() -> dict[str, str]:
    """The variables and their defaults, for the project root found from here."""
    return {
        # Prefect's home (its ephemeral server's database, settings) belongs to the
        # project, not to ~/.prefect: two checkouts never see each other's runs or
        # concurrency slots.
        "PREFECT_HOME": str(project_root() / ".prefect"),
        # Prefect's ephemeral server (used when PREFECT_API_URL is unset) migrates its
        # database on first start, which takes ~30 s on a 2-core machine: more than
        # the default start-up timeout.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        # Keep cached task results with the project, beside the outputs they point to.
        "PREFECT_LOCAL_STORAGE_PATH": str(runs_dir() / "prefect-results"),
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        # DVC, Prefect's server and MLflow would otherwise try to send usage analytics over a
        # network we do not have (Prefect's heartbeat logs an ERROR each time it fails).
        "DVC_NO_ANALYTICS": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # Logging to a tracking server (a worker's runs), MLflow prints "View run / View
        # experiment" links as each stage's run ends: 26 lines a run, in the GenAI layout.
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
        # Its "Downloading artifacts: 100%|..." bar, drawn as the registry stage logs the
        # reward model and `eval export` reads a run, lands between the run's log lines.
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        # Quieter logs: transformers and tokenizers warn about things we do on purpose.
        "TOKENIZERS_PARALLELISM": "false",
        "TRANSFORMERS_VERBOSITY": "error",
        # Offline unless you say otherwise (HF_HUB_OFFLINE=0 fetches a Hub id).
        "HF_HUB_OFFLINE": "1",
        # transformers draws a "Loading weights" bar for every model it opens; at these
        # sizes each lasts a blink and dozens of them bury the pipeline's own progress.
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }


def apply_defaults(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Set every default that `environ` lacks; return what was set."""
    added = {name: value for name, value in defaults().items() if name not in environ}
    environ.update(added)
    return added


HEARTBEAT_VARIABLE = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"


@contextmanager
def no_flow_heartbeats() -> Iterator[None]:
    """Flow runs started inside, in this process, emit no heartbeats, unless you set PREFECT_FLOWS_HEARTBEAT_FREQUENCY.

    Heartbeats only feed an automation that marks silent runs Crashed, which a
    self-hosted Prefect has only if you create it (a killed run is found here by
    instructflow.tasks.leftovers' liveness lock instead). Their cost: Prefect's
    engine joins the heartbeat thread at the end of every flow run, and that
    thread sleeps in 1 s steps, so each run waits up to a second for nothing (an
    all-cached smoke re-run took 1.1 or 2.1 s, never between). An environment
    variable cannot say "off" (Prefect accepts only 30 s or more), hence a
    settings context around the call. Runs a worker starts, and a sweep's seed runs
    (in processes of their own), keep Prefect's setting.
    """
    if HEARTBEAT_VARIABLE in os.environ:
        yield
        return
    import prefect.context

    current = prefect.context.get_settings_context()
    with prefect.context.SettingsContext(
        profile=current.profile, settings=_without_heartbeats(current.settings)
    ):
        yield


# Where `make serve` (scripts/serve.sh) shows the project's Prefect database and MLflow store.
SERVE_HOST = "http://127.0.0.1"


def prefect_ui_url() -> str:
    """The Prefect UI that shows this process's flow runs.

    PREFECT_UI_URL, which Prefect derives from PREFECT_API_URL (a deployment run of
    `make serve`'s worker: http://127.0.0.1:4200). Without either, `instructflow run`
    uses a temporary server on a random port that stops with the run (Prefect then
    knows no UI URL, and its `flow_run.ui_url` is 'None/...'); its database is
    PREFECT_HOME's, which `make serve` later shows at http://127.0.0.1:$PREFECT_PORT
    (PREFECT_PORT here, else the port `make serve` last served it on, else 4200), so
    that is where the run's page is.
    """
    from prefect.settings import PREFECT_HOME, PREFECT_UI_URL

    url = PREFECT_UI_URL.value()
    if url and url.startswith("http"):
        return url.rstrip("/")
    if port := os.environ.get("PREFECT_PORT"):
        return f"{SERVE_HOST}:{port}"
    return served_at(Path(PREFECT_HOME.value())) or f"{SERVE_HOST}:4200"


# scripts/serve.sh writes the URL it serves a store at into this file beside the store
# (PREFECT_HOME; the SQLite MLflow store's folder): a run started in another shell, without
# PREFECT_PORT / MLFLOW_PORT, then links the port `make serve` was given, not the default.
SERVED_AT = "served-at.url"


def served_at(folder: Path) -> str | None:
    """The URL `make serve` last served the store in `folder` at, or None."""
    try:
        url = (folder / SERVED_AT).read_text().strip()
    except OSError:
        return None
    return url.rstrip("/") if url.startswith("http") else None


def prefect_flow_run_url(flow_run_id: str | None) -> str | None:
    """A flow run's page in the Prefect UI (None without a flow run)."""
    return f"{prefect_ui_url()}/runs/flow-run/{flow_run_id}" if flow_run_id else None


TRAINING_LAYOUT = "workflowType=machine_learning"


def mlflow_run_url(experiment_id: str, run_id: str) -> str:
    """Where a person opens an MLflow run: the tracking server, or the one `make serve` starts."""
    from instructflow.tasks.tracking import tracking_uri

    uri = tracking_uri()
    base = os.environ.get("INSTRUCTFLOW_MLFLOW_UI") or (uri if uri.startswith("http") else None)
    if base is None and (port := os.environ.get("MLFLOW_PORT")):
        base = f"{SERVE_HOST}:{port}"
    if base is None and uri.startswith("sqlite:///"):
        base = served_at(Path(uri.removeprefix("sqlite:///")).parent)
    base = base or f"{SERVE_HOST}:5000"
    # MLflow 3.17's UI lays a run out by a GenAI / Model training switch kept in the browser
    # (GenAI until a person flips it), not by the experiment's tag: the link asks for training.
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{TRAINING_LAYOUT}"


_settings_copies: dict[str, Any] = {}


def _without_heartbeats(settings: Any) -> Any:
    """`settings` with heartbeats off: copied once per settings object (a copy validates
    every Prefect setting again, 20 ms, a twentieth of an all-cached re-run)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY

    if _settings_copies.get("of") is not settings:
        copy = settings.copy_with_update(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})
        _settings_copies.update(of=settings, copy=copy)
    return _settings_copies["copy"]


if __name__ == "__main__":
    for name, value in apply_defaults(dict(os.environ)).items():
        print(f"export {name}={shlex.quote(value)}")
