"""tasks.temporary_server: Prefect's temporary server started apart, on a kernel-chosen port."""

import os
import socket
import subprocess
import sys

import pytest
from prefect.server.api import server as prefect_server

from instructflow.tasks import temporary_server


@pytest.fixture
def prepared(monkeypatch):
    """prepare() on the class, undone after the test (it patches Prefect's class in place)."""
    cls = prefect_server.SubprocessASGIServer
    monkeypatch.setattr(cls, "_run_uvicorn_command", cls._run_uvicorn_command)
    monkeypatch.setattr(cls, "find_available_port", cls.find_available_port)
    # Prefect keeps one server per port in the process: a temporary server an earlier test
    # of this process started would be the one these tests start (on its own database).
    monkeypatch.setattr(cls, "_instances", {})
    temporary_server.prepare()
    return cls


def test_the_port_is_the_kernels_not_a_draw_from_prefects_thousand(prepared, monkeypatch):
    # given Prefect's draw made to fail, so that a port from it would show
    def no_draw(*_):
        raise AssertionError("drew a port at random")

    monkeypatch.setattr(prefect_server.random, "choice", no_draw)
    # when the server's port is chosen (twice: a second run on the machine)
    ports = [prepared.__new__(prepared, -1 - i).find_available_port() for i in range(2)]
    # then each is free to bind and outside Prefect's range
    for port in ports:
        assert port not in range(8000, 9000)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
    for i in range(2):
        prepared._instances.pop(-1 - i, None)


def test_prepare_twice_patches_once(prepared):
    start = prepared._run_uvicorn_command
    temporary_server.prepare()
    assert prepared._run_uvicorn_command is start
    assert start.apart


def test_no_room_for_a_new_database_is_the_disk_full_line_before_any_server(tmp_path, monkeypatch):
    # A full disk while the server made its database: ~3 minutes of the server's tracebacks,
    # then a half-migrated prefect.db that every later start failed on
    from collections import namedtuple

    from prefect.settings import (
        PREFECT_API_DATABASE_CONNECTION_URL,
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_ENABLED,
        temporary_settings,
    )

    from instructflow.flows.explained_errors import explanation

    database = tmp_path / ".prefect" / "prefect.db"
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(temporary_server.shutil, "disk_usage", lambda _: usage(1, 1, 2**20))
    started = []
    monkeypatch.setattr(temporary_server, "prepare", lambda: started.append(True))
    settings = {
        PREFECT_API_DATABASE_CONNECTION_URL: f"sqlite+aiosqlite:///{database}",
        PREFECT_API_URL: None,
        PREFECT_SERVER_EPHEMERAL_ENABLED: True,
    }
    with temporary_settings(settings):
        # when a run would start its server with 1 MiB free where the database goes
        with pytest.raises(OSError) as raised:
            temporary_server.start_early()
        # then no server starts, and the command line says the disk is full, where
        status, line = explanation(raised.value)
        assert not started and not database.exists()
        assert status == 3 and line.startswith(f"the disk is full while writing {database}")
        # and a database already there (the next runs' case) needs no room to be made
        database.parent.mkdir()
        database.touch()
        temporary_server.check_room_for_a_new_database()


def test_a_discarded_start_stops_at_once_and_leaves_the_database_whole(prepared, tmp_path):
    import time

    from prefect.client.orchestration import get_client
    from prefect.settings import (
        PREFECT_API_DATABASE_CONNECTION_URL,
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_ENABLED,
        temporary_settings,
    )

    from instructflow.tasks import outages

    database = tmp_path / "prefect.db"
    url = f"sqlite+aiosqlite:///{database}"
    settings = {
        PREFECT_API_DATABASE_CONNECTION_URL: url,
        PREFECT_API_URL: None,
        PREFECT_SERVER_EPHEMERAL_ENABLED: True,
    }
    with temporary_settings(settings):
        # given a run's early server creating its new database (its migrations take seconds),
        # a database named only in these settings, not in the environment: start_early's
        # thread must start the server with its caller's settings
        early = temporary_server.start_early()
        deadline = time.monotonic() + 60
        while not database.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert database.exists(), "the early server did not create the database it was given"
        process = early._server.server_process
        if outages.server_answers(early._server.api_url):
            pytest.skip("the server answered before it could be discarded while starting")
        # when the run is refused before the server answers
        started = time.monotonic()
        early.discard()
        # then the server is gone at once, not once its migrations are done
        assert time.monotonic() - started < 2.0
        assert process.poll() is not None
        # and the next run's server starts on that database and writes to it
        again = temporary_server.start_early()
        try:
            again.ready()
            with get_client(sync_client=True) as client:
                client.create_flow_from_name("after-a-discarded-start")
                assert [f.name for f in client.read_flows()] == ["after-a-discarded-start"]
        finally:
            again.discard()


EARLY_START = """
from instructflow.tasks import temporary_server
early = temporary_server.start_early()
early._thread.join(90)
print("started", not early._thread.is_alive() and not early._failed, flush=True)
early.discard()
"""


def test_a_database_under_folders_not_there_yet_is_made_there(tmp_path):
    # given a PREFECT_HOME (here its database) under folders that are not there yet, in a
    # process of its own (Prefect keeps one temporary server per process: a test harness's
    # would be the one started here)
    database = tmp_path / "not-yet" / "home" / "prefect.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {
        "PREFECT_HOME": str(tmp_path / "not-yet" / "home"),
        "PREFECT_SERVER_EPHEMERAL_ENABLED": "true",
    }
    # when a run starts its early server
    done = subprocess.run(
        [sys.executable, "-c", EARLY_START], env=env, capture_output=True, text=True, timeout=150
    )
    # then it answers, on a database made there (it could not open one: 180 s of restarts,
    # then the run failed)
    assert "started True" in done.stdout, done.stderr[-2000:]
    assert database.exists()
