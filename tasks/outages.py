"""The services a run needs, checked before it starts, and bounded waits when one goes away.

Unreachable at start: one line naming the URI within seconds, before any
training (MLflow's own client would retry for minutes: 7 retries with a
backoff factor of 2 and a 120 s timeout per request). Lost mid-run: MLflow's
client retries a few times with backoff (`bound_mlflow_retries`); where finished
work would be lost (a stage's results, tasks/batched_log.py; the registry's slot,
tasks/concurrency.py) the server gets OUTAGE_WAIT_SECONDS to come back
(`wait_until_answering`: a restart); then the stage fails, its checkpoints stay
in runs/, and the same command run again resumes where it stopped. A process that
found Prefect's API lost notes when (`note_prefect_api_lost`): its flow's end then
reads its task runs back (tasks/task_run_states.py).
"""

import errno
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.request

# MLflow's HTTP client, bounded: about 15 s of retries (1, 2, 4, 8 s) and 20 s per request.
MLFLOW_RETRY_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


# An OSError is a lost service only with one of these; a file's error is not (a missing
# checkpoint file said "lost a service" before).
NETWORK_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ETIMEDOUT,
    errno.EPIPE,
}
HTTP_CLIENTS = ("httpx", "httpcore", "requests", "urllib3")


class ServiceUnreachable(RuntimeError):
    def __init__(self, what: str, uri: str, reason: str, hint: str):
        self.uri = uri
        super().__init__(f"{what} at {uri} is unreachable ({reason}); {hint}")


class RunFault(RuntimeError):
    """A full or read-only disk or a lost service, as its one line (fault_line): what a worker's
    flow run raises instead (from the original), so that the Failed state Prefect's UI shows
    reads as the command line's line, not as a 400-character MlflowException."""


def bound_mlflow_retries() -> None:
    """Called by the CLI and the flow (not at import); a value the user exported wins."""
    for key, value in MLFLOW_RETRY_ENV.items():
        os.environ.setdefault(key, value)


def _get(url: str, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310  (http(s) only)
        response.read(64)


def server_answers(uri: str, timeout: float = 1.0) -> bool:
    """Whether an http(s) server answers GET /health now (any other URI: a file store, True)."""
    if not uri.startswith(("http://", "https://")):
        return True
    try:
        _get(uri.rstrip("/") + "/health", timeout)
    except urllib.error.HTTPError as error:  # it answered: only a 5xx is a server not up
        return error.code < 500  # (a 401 from a proxy that guards /health too is up)
    except (urllib.error.URLError, OSError):  # refused, timed out
        return False
    return True


OUTAGE_WAIT_SECONDS = 300.0  # how long finished work waits for a lost server (a restart)
PROBE_SECONDS = 5.0  # a /health slower than this counts as not answering

PREFECT_API = "Prefect's API"  # what the waits for it call it
EVENTS_CLIENT_LOGGER = "prefect.events.clients"  # warns when it gives an event up
SERVICES_LOGGER = "prefect._internal.concurrency"  # "Service 'EventsWorker' failed ..."

# When this process last found Prefect's API lost (time.time(); 0: never). Only a flow that
# saw it lost reads its task runs back at its end (tasks/task_run_states.py): a run that
# saw no outage pays one comparison of two numbers for it.
_prefect_lost_at = 0.0


def note_prefect_api_lost() -> None:
    global _prefect_lost_at
    _prefect_lost_at = time.time()


def prefect_api_lost_since(start: float) -> bool:
    """Whether this process found Prefect's API lost at `start` (time.time()) or later."""
    return _prefect_lost_at >= start


class _EventsGivenUp(logging.Handler):
    """Prefect's events client giving an event up (its task-run states go by events only):
    its warning once its reconnection attempts fail, or its worker's error on a failure to
    send that the client neither retries nor warns about."""

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if record.name == EVENTS_CLIENT_LOGGER or args[:1] == ("EventsWorker",):
            note_prefect_api_lost()


_events_given_up = _EventsGivenUp(logging.WARNING)


def watch_prefect_events() -> None:
    """From now on, note Prefect's API lost when its events client gives an event up (a
    handler on its two loggers, added once; it runs only on their warnings and errors)."""
    for name in (EVENTS_CLIENT_LOGGER, SERVICES_LOGGER):
        logger = logging.getLogger(name)
        if _events_given_up not in logger.handlers:
            logger.addHandler(_events_given_up)


class ServerBusy(Exception):
    """Prefect's server answered 503 (or 429, 502): worth asking again soon; still so after
    the asks (tasks/concurrency.py asked_until_answered), a lost service's fault (one line)."""


def wait_if_not_answering(what: str, uri: str, why: str) -> None:
    """Nothing if the server at `uri` answers now; else `wait_until_answering` (a caller
    whose work would be lost with a failed request: its request then fails as before)."""
    if not server_answers(uri, PROBE_SECONDS):
        wait_until_answering(what, uri, why)


def prefect_api_url() -> str:
    """The Prefect API this process talks to ('' for none set: nothing to wait for)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or ""


def configured_prefect_api() -> str:
    """The Prefect server a person named for this project: PREFECT_API_URL exported, or set
    in the active Prefect profile (`prefect config set`, under PREFECT_HOME); '' for none (a
    run then starts a temporary server of its own, which nothing else talks to)."""
    if url := os.environ.get("PREFECT_API_URL"):
        return url
    from prefect.context import get_settings_context
    from prefect.settings import PREFECT_API_URL

    return get_settings_context().profile.settings.get(PREFECT_API_URL) or ""


def wait_until_answering(what: str, uri: str, why: str, seconds: float | None = None) -> bool:
    """Whether the server at `uri` answers /health within `seconds` (OUTAGE_WAIT_SECONDS),
    asked every second; one line says what waits for it and why."""
    seconds = OUTAGE_WAIT_SECONDS if seconds is None else seconds
    if what == PREFECT_API:
        note_prefect_api_lost()
    print(
        f"{what} ({uri}) does not answer; {why}: waiting up to {seconds:.0f} s for it", flush=True
    )
    deadline = time.monotonic() + seconds
    while True:
        if server_answers(uri, PROBE_SECONDS):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(1.0)


# A server that accepted the connection but has not answered /health in the first wait is
# there, only slow (a saturated machine: a sweep's seeds on every core): it gets this long
# more before the run is refused as if it were down.
SLOW_SERVER_SECONDS = 30.0


def check_reachable(
    what: str,
    base: str,
    path: str,
    hint: str,
    timeout: float = 5.0,
    slow_timeout: float = SLOW_SERVER_SECONDS,
) -> None:
    url = base.rstrip("/") + path
    try:
        try:
            _get(url, timeout)
        except TimeoutError:  # connected, no answer yet: wait longer, once
            _get(url, slow_timeout)
    except urllib.error.HTTPError as error:
        if error.code >= 500:
            raise ServiceUnreachable(what, base, f"HTTP {error.code}", hint) from None
    except TimeoutError:
        waited = f"no answer to {path} within {timeout + slow_timeout:.0f} s"
        raise ServiceUnreachable(what, base, waited, hint) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ServiceUnreachable(what, base, str(reason), hint) from None


def preflight(mlflow_uri: str | None = None) -> None:
    """MLflow (when it is a server) and the Prefect API (when one is set: the variable or
    Prefect's profile) answer, or one clear error."""
    mlflow_uri = mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if mlflow_uri.startswith(("http://", "https://")):
        check_reachable(
            "the MLflow tracking server",
            mlflow_uri,
            "/health",
            "start it (make serve) or unset MLFLOW_TRACKING_URI to use the project's SQLite store",
        )
    # Prefect's setting, not only the variable: one set in the Prefect profile (`prefect
    # config set`, under PREFECT_HOME) went unchecked and the run died in a 60-line traceback.
    prefect_api = configured_prefect_api()
    if prefect_api:
        check_reachable(
            "the Prefect API",
            prefect_api,
            "/health",
            f"start it (make serve) or {_how_to_unset_prefect_api()} to run with Prefect's "
            "ephemeral server",
        )


def _how_to_unset_prefect_api() -> str:
    """Where this process's PREFECT_API_URL comes from, as the words that unset it."""
    if os.environ.get("PREFECT_API_URL"):
        return "unset PREFECT_API_URL"
    from prefect.context import get_settings_context

    context = get_settings_context()
    where = f"profile {context.profile.name!r} in {context.settings.home}/profiles.toml"
    return f"run `prefect config unset PREFECT_API_URL` (it is set in Prefect's {where})"


def fault_line(error: Exception, resumable: bool = True) -> str | None:
    """The one line a full or read-only disk or a lost service gets, else None: what the
    command line prints and a run's report and MLflow failure_reason say."""
    from instructflow.tasks import tracking  # imports MLflow: only for what may be a fault
    from instructflow.tasks.storage_faults import storage_fault_message

    return storage_fault_message(error, resumable) or lost_service_message(
        error, tracking.tracking_uri(), resumable
    )


def lost_service_message(
    error: BaseException, mlflow_uri: str, resumable: bool = True
) -> str | None:
    """One line for an error that says a service went away mid-run; None for any other error.
    `resumable`: a pipeline run, which the same command resumes (else it is simply repeated)."""
    from mlflow.exceptions import MlflowException

    text = str(error)
    network = isinstance(error, ConnectionError | TimeoutError | socket.gaierror) or (
        isinstance(error, OSError) and error.errno in NETWORK_ERRNOS
    )
    lost = (
        network
        or isinstance(error, ServerBusy)
        or (
            isinstance(error, MlflowException)
            and any(s in text for s in ("Max retries exceeded", "Connection refused", "timed out"))
        )
    )
    # The HTTP clients' own errors (requests' are OSErrors without an errno).
    if type(error).__module__.startswith(HTTP_CLIENTS) or "ConnectError" in type(error).__name__:
        lost = True
    if not lost:
        return None
    first = cause_in_words(text) if text.strip() else type(error).__name__
    services = f"MLflow: {mlflow_uri}; Prefect: {prefect_api_url() or 'ephemeral'}"
    if not resumable:
        return f"lost a service ({services}): {first}. Run the same command again once it is back."
    return (
        f"lost a service mid-run ({services}): {first}. Finished stages and "
        "checkpoints are kept under runs/; run the same command again to resume."
    )


REASONS = ("Connection refused", "timed out", "Name or service not known", "Max retries exceeded")


def cause_in_words(text: str) -> str:
    """What failed, in a few words: MLflow's "API request to URL failed with exception
    HTTPConnectionPool(...): Max retries exceeded ... (Caused by ...)" as the request and the
    reason, else the first line cut at a word (cut at 200 characters, it ended in "(Cause.")."""
    request = re.search(r"API request to (\S+) failed", text)
    reason = next((r for r in REASONS if r in text), None)
    if request and reason:
        return f"API request to {request[1]} failed ({reason})"
    first = text.strip().splitlines()[0]
    return first if len(first) <= 200 else first[: first.rfind(" ", 0, 200)] + " ..."
