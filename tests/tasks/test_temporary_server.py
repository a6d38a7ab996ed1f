"""tasks.temporary_server: Prefect's temporary server started apart, on a kernel-chosen port."""

import socket

import pytest
from prefect.server.api import server as prefect_server

from instructflow.tasks import temporary_server


@pytest.fixture
def prepared(monkeypatch):
    """prepare() on the class, undone after the test (it patches Prefect's class in place)."""
    cls = prefect_server.SubprocessASGIServer
    monkeypatch.setattr(cls, "_run_uvicorn_command", cls._run_uvicorn_command)
    monkeypatch.setattr(cls, "find_available_port", cls.find_available_port)
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
