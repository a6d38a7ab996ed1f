"""Servers checked before a run, bounded retries, and the one line a lost server gives."""

import asyncio
import errno
import http.server
import logging
import threading
import time

import pytest
from mlflow.exceptions import MlflowException

from instructflow.tasks import outages
from tests.live_stack import free_port


@pytest.fixture
def healthy_server():
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200 if self.path.endswith("/health") else 404)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_preflight_passes_when_both_servers_answer(healthy_server, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", healthy_server + "/api")
    outages.preflight(healthy_server)


def test_preflight_names_the_unreachable_uri_and_what_to_do(monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(
        outages.ServiceUnreachable,
        match=rf"MLflow tracking server at {uri} is unreachable.*MLFLOW_TRACKING_URI",
    ):
        outages.preflight(uri)
    outages.preflight("sqlite:///x.db")  # a local store needs no server


def test_a_server_slow_to_answer_is_waited_for_and_a_silent_one_refused():
    import socket
    import time

    class SlowHealth(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            time.sleep(1.0)  # a server on a saturated machine
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    # given a server that answers /health after 1 s, more than the first wait
    slow = http.server.HTTPServer(("127.0.0.1", 0), SlowHealth)
    threading.Thread(target=slow.serve_forever, daemon=True).start()
    slow_url = f"http://127.0.0.1:{slow.server_address[1]}"
    try:
        # then it is waited for, not refused as down
        outages.check_reachable("the Prefect API", slow_url, "/health", "hint", 0.3, 5.0)
    finally:
        slow.shutdown()
    # and a server that accepts the connection and never answers is refused, saying so
    with socket.create_server(("127.0.0.1", 0)) as silent:
        silent_url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(
            outages.ServiceUnreachable, match=r"\(no answer to /health within 2 s\); hint"
        ):
            outages.check_reachable("the Prefect API", silent_url, "/health", "hint", 1.0, 1.0)


def test_mlflow_retries_are_bounded_unless_the_user_chose(monkeypatch):
    for key in outages.MLFLOW_RETRY_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")
    outages.bound_mlflow_retries()
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
        MLFLOW_HTTP_REQUEST_TIMEOUT,
    )

    assert MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() == 4
    assert MLFLOW_HTTP_REQUEST_TIMEOUT.get() == 7


def test_a_server_lost_mid_run_gives_one_line_saying_how_to_resume():
    lost = MlflowException(
        "API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/log-batch failed with exception "
        "HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries exceeded with url: ..."
    )
    message = outages.lost_service_message(lost, "http://127.0.0.1:5000")
    assert "http://127.0.0.1:5000" in message and "run the same command again" in message
    assert "\n" not in message
    assert outages.lost_service_message(ValueError("bad value"), "x") is None


def test_a_prefect_server_busy_for_good_is_a_lost_service_one_line_saying_how_to_resume():
    # given the registry's slot asked of a Prefect server whose database stayed locked
    busy = outages.ServerBusy("Prefect's server answered 503 to each of 11 asks over 51 s")
    # then the run ends with one line (a traceback before), naming it and how to resume
    message = outages.lost_service_message(busy, "sqlite:///mlflow/mlflow.db")
    assert message.startswith("lost a service mid-run (MLflow: sqlite:///mlflow/mlflow.db;")
    assert "answered 503 to each of 11 asks over 51 s" in message
    assert "run the same command again to resume" in message and "\n" not in message


def test_a_lost_service_line_names_the_request_and_the_reason_in_whole_words():
    # as MLflow words it (a tester's run): cut at 200 characters, the line ended in "(Cause."
    lost = MlflowException(
        "API request to http://127.0.0.1:5071/api/2.0/mlflow/runs/update failed with exception "
        "HTTPConnectionPool(host='127.0.0.1', port=5071): Max retries exceeded with url: "
        "/api/2.0/mlflow/runs/update (Caused by NewConnectionError('<urllib3.connection."
        "HTTPConnection object at 0x7f>: Failed to establish a new connection: [Errno 111] "
        "Connection refused'))"
    )
    message = outages.lost_service_message(lost, "http://127.0.0.1:5071")
    assert (
        "): API request to http://127.0.0.1:5071/api/2.0/mlflow/runs/update failed "
        "(Connection refused). Finished stages"
    ) in message
    # any other long first line is cut at a word
    long = ConnectionError("word " * 60)
    cause = outages.lost_service_message(long, "x").split("): ", 1)[1].split(". Finished")[0]
    assert cause.endswith("word ...") and len(cause) <= 204


def test_only_network_errors_count_as_a_lost_service():
    import errno

    import requests

    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    assert outages.lost_service_message(refused, "x") is not None
    reset = OSError(errno.ECONNRESET, "Connection reset by peer")
    assert outages.lost_service_message(reset, "x") is not None
    assert outages.lost_service_message(requests.ConnectionError("pool closed"), "x") is not None
    # a file's error is not: transformers' missing weights, a corrupted read
    missing = OSError("Error no file named model.safetensors found in directory runs/sft/x/model")
    assert outages.lost_service_message(missing, "x") is None
    assert outages.lost_service_message(OSError(errno.EIO, "Input/output error"), "x") is None


def test_a_lost_service_outside_a_pipeline_run_promises_no_resume():
    lost = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    message = outages.lost_service_message(lost, "http://127.0.0.1:5000", resumable=False)
    assert message.startswith("lost a service (MLflow: http://127.0.0.1:5000; Prefect: ")
    assert message.endswith("Run the same command again once it is back.")
    assert "checkpoints" not in message and "mid-run" not in message


def test_a_server_that_answers_is_not_waited_for(healthy_server, capsys):
    outages.wait_if_not_answering("the MLflow tracking server", healthy_server, "a stage starts")
    assert capsys.readouterr().out == ""  # nothing said, nothing waited


def test_a_server_that_does_not_answer_is_waited_for_and_said_so(monkeypatch, capsys):
    answers = iter([False, False, True])
    monkeypatch.setattr(outages, "server_answers", lambda *_: next(answers))
    monkeypatch.setattr(outages.time, "sleep", lambda _s: None)
    outages.wait_if_not_answering("Prefect's API", "http://127.0.0.1:9/api", "artifacts go there")
    assert next(answers, "asked three times") == "asked three times"
    assert capsys.readouterr().out == (
        "Prefect's API (http://127.0.0.1:9/api) does not answer; artifacts go there: "
        "waiting up to 300 s for it\n"
    )


def test_a_server_gone_for_good_is_given_up_on_after_the_wait(monkeypatch):
    monkeypatch.setattr(outages, "server_answers", lambda *_: False)
    monkeypatch.setattr(outages, "OUTAGE_WAIT_SECONDS", 0.0)
    assert outages.wait_until_answering("MLflow", "http://127.0.0.1:9", "x") is False


@pytest.mark.parametrize("status, up", [(200, True), (401, True), (404, True), (503, False)])
def test_a_server_answering_health_with_an_error_below_500_is_up(status, up):
    # given a server (or the proxy before it) that answers /health with `status`
    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # then it is up unless it says it is not (5xx), as the run's preflight has it: a 401
        # from a proxy that guards every path must not make each stage wait 300 s for it
        assert outages.server_answers(f"http://127.0.0.1:{server.server_address[1]}") is up
    finally:
        server.shutdown()


def test_a_closed_port_does_not_answer():
    assert outages.server_answers(f"http://127.0.0.1:{free_port()}") is False


def test_a_wait_for_prefects_api_notes_it_lost_and_one_for_mlflow_does_not(monkeypatch):
    # given a server that does not answer
    monkeypatch.setattr(outages, "server_answers", lambda *_: False)
    monkeypatch.setattr(outages, "OUTAGE_WAIT_SECONDS", 0.0)
    started = time.time()
    # when MLflow's is waited for, then Prefect's
    outages.wait_until_answering("the MLflow tracking server", "http://127.0.0.1:9", "x")
    mlflow_noted = outages.prefect_api_lost_since(started)
    outages.wait_until_answering(outages.PREFECT_API, "http://127.0.0.1:9/api", "x")
    # then only the wait for Prefect's API says a flow's end has task runs to read back
    assert not mlflow_noted and outages.prefect_api_lost_since(started)


def test_prefects_events_client_giving_an_event_up_notes_its_api_lost():
    # given a process watching Prefect's events client, and a Prefect API that is gone
    from prefect.events.clients import PrefectEventsClient

    outages.watch_prefect_events()
    outages.watch_prefect_events()  # once more: still one handler
    handlers = logging.getLogger(outages.EVENTS_CLIENT_LOGGER).handlers
    assert handlers.count(outages._events_given_up) == 1
    url = f"http://127.0.0.1:{free_port()}/api"
    started = time.time()

    async def connect():
        async with PrefectEventsClient(api_url=url, reconnection_attempts=0):
            pass

    # when its client cannot connect to send events
    with pytest.raises(OSError):
        asyncio.run(connect())
    # then the API is noted lost
    assert outages.prefect_api_lost_since(started)


def test_the_events_workers_failure_notes_prefects_api_lost_and_the_log_workers_does_not():
    outages.watch_prefect_events()
    services = logging.getLogger(outages.SERVICES_LOGGER)
    started = time.time()
    services.error("Service %r failed to process batch of size %s", "APILogWorker", 3)
    assert not outages.prefect_api_lost_since(started)  # logs lost, not task-run states
    services.error("Service %r failed to process item %r", "EventsWorker", "an event")
    assert outages.prefect_api_lost_since(started)


def test_a_prefect_api_is_configured_by_the_variable_or_the_profile(monkeypatch):
    from prefect.context import use_profile
    from prefect.settings import PREFECT_API_URL, Profile

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    # none in the profile either: the run starts a temporary server of its own
    with use_profile(Profile(name="none", settings={}), include_current_context=False):
        assert outages.configured_prefect_api() == ""
    # one set by `prefect config set` (the active profile) counts as one exported
    in_profile = Profile(name="served", settings={PREFECT_API_URL: "http://127.0.0.1:4300/api"})
    with use_profile(in_profile, include_current_context=False):
        assert outages.configured_prefect_api() == "http://127.0.0.1:4300/api"
        # and the exported variable wins over it, as it does in Prefect
        monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
        assert outages.configured_prefect_api() == "http://127.0.0.1:4200/api"
