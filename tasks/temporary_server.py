"""Prefect's temporary server (the one a run without PREFECT_API_URL starts): how the
command line starts it.

Three changes to how Prefect starts it (SubprocessASGIServer), made before a run's flow:

- In a session of its own. A terminal's Ctrl-C goes to its whole foreground process
  group: the server, a child of the run, died at once, and the run then spent minutes
  retrying it before it could stop (and said "lost a service"). Apart, the server
  outlives the signal, the run stops (tasks/interrupts.py) and records its flow run's
  end, and then stops the server, as Prefect does at exit. A server a killed run leaves
  behind is stopped by the next run (tasks/leftovers.py).
- On a port the kernel hands out. Prefect draws one at random from 8000-8999, checks it
  is free, starts the server and polls /api/health until something answers. Two
  processes that draw the same port within the seconds a server takes to start (runs
  started together, a loaded machine) both get their answer from the first server: the
  second's own server cannot bind and exits, and its run writes into the other's
  database until that server stops, then fails with "Connection refused" (seen
  2026-12-06, 15 minutes into a run, with other Prefect processes on the machine). The
  kernel hands the ports of its ephemeral range out in turn, not by a draw among a
  thousand, and none of them is in Prefect's range.
- Early (start_early): while the command imports and checks its inputs, not after.
"""

import socket
import subprocess
import threading
from collections.abc import Callable


def kernel_port() -> int:
    """A free loopback port chosen by the kernel (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare() -> None:
    """Make Prefect start this process's temporary server apart and on a kernel port
    (see above); idempotent. A server already running is left as it is."""
    from prefect.server.api.server import SubprocessASGIServer

    start = SubprocessASGIServer._run_uvicorn_command
    if getattr(start, "apart", False):
        return

    def start_apart(server: SubprocessASGIServer) -> subprocess.Popen:
        popen = subprocess.Popen
        subprocess.Popen = lambda *args, **kwargs: popen(*args, start_new_session=True, **kwargs)
        try:
            return start(server)
        finally:
            subprocess.Popen = popen

    start_apart.apart = True
    SubprocessASGIServer._run_uvicorn_command = start_apart
    # Also where Prefect draws again after its server exited for a port taken meanwhile.
    SubprocessASGIServer.find_available_port = lambda server: kernel_port()


def start_early() -> Callable[[], None]:
    """Start the temporary server a run will use now, in a thread, while this process goes on
    importing and checking its inputs; returns `ready`, to call before the run's first Prefect
    API call. Started at that first call instead, as Prefect does, the server's start (~3 s)
    came after the command's imports and checks (~5 s of one core) and the run waited for it;
    here it takes the other core meanwhile.

    `ready` waits for the server to answer and raises what stopped it from starting. It must
    come before any Prefect API call: Prefect's own start, at that call, returns at once for a
    server that is starting (its `running` is set before the server answers). A process that
    ends without calling it (a refusal, Ctrl-C) waits for the thread at exit, then stops the
    server through the handler Prefect registered when it started it.

    Starts nothing where Prefect would start nothing (PREFECT_API_URL set, ephemeral mode off);
    `ready` then does nothing.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return lambda: None
    prepare()
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.server.api.server import SubprocessASGIServer

    ensure_logging_setup()  # so that Prefect's "Starting temporary server on ..." is shown

    server = SubprocessASGIServer()  # Prefect's one instance, which its client then finds
    failed: list[BaseException] = []

    def start() -> None:
        try:
            server.start()
        except BaseException as error:  # raised again in the run's thread, by `ready`
            failed.append(error)

    thread = threading.Thread(target=start, name="prefect-temporary-server")
    thread.start()

    def ready() -> None:
        thread.join()
        if failed:
            raise failed[0]

    return ready
