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

import contextvars
import errno
import os
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
from contextlib import closing
from pathlib import Path

# Room a new Prefect database needs: its server creates and migrates it as it starts (~6 MiB
# with its write-ahead log after a smoke run). Without it the start failed after ~3 minutes
# of the server's tracebacks, and left a half-migrated database on which every later start
# failed ("duplicate column name"), with space again or not.
NEW_DATABASE_ROOM = 32 * 2**20
# How long a discarded start gets to reach its process, or to end once it is killed.
DISCARD_SECONDS = 5.0


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


class EarlyStart:
    """Prefect's temporary server, started in a thread (start_early)."""

    def __init__(self, server=None):
        self._server = server
        self._failed: list[BaseException] = []
        self._thread = None
        if server is not None:
            # The thread starts the server with the caller's Prefect settings: a thread does not
            # inherit context variables, where `temporary_settings` keeps them, and started in
            # a bare context the server took the process's settings instead (another database).
            caller = contextvars.copy_context()
            self._thread = threading.Thread(
                target=caller.run, args=(self._start,), name="prefect-temporary-server"
            )
            self._thread.start()

    def _start(self) -> None:
        from prefect.server.api.server import subprocess_server_logger

        # Its "Starting temporary server on ..." line stays unsaid where Prefect's logging is
        # set up already (main() called in a process that imported Prefect: the tests): it
        # came before a refusal's first line, or, once pytest had closed that stream, as
        # "--- Logging error ---" and a traceback.
        subprocess_server_logger.disabled = True
        try:
            self._server.start()
        except BaseException as error:  # raised again in the run's thread, by ready()
            self._failed.append(error)
        finally:
            subprocess_server_logger.disabled = False

    def ready(self) -> None:
        """Wait for the server to answer; raise what stopped it from starting."""
        if self._thread is not None:
            self._thread.join()
        if self._failed:
            raise self._failed[0]

    def discard(self) -> None:
        """Stop the server now, without a word: the run ends before its flow (a refusal), and
        Prefect's "Stopping temporary server" would read as if a run had started.

        Not waiting for it to answer first: a new database's migrations took 4-8 s after a
        refusal's line on a 2-core machine. Killed (SIGKILL: on SIGTERM uvicorn finishes
        its start-up first) mid-migration, the database stays whole: Prefect migrates
        SQLite one transaction per migration, and a start killed 1.5, 3 or 5 s in was
        followed by a start that served a flow run (by hand, 2026-12-07)."""
        if self._thread is None:
            return
        from prefect.server.api.server import subprocess_server_logger

        disabled, subprocess_server_logger.disabled = subprocess_server_logger.disabled, True
        try:
            process = self._started_process()
            if process is not None:
                process.kill()
                process.wait()
            # No process left to stop; forgets Prefect's instance, whose start (the
            # thread's wait for an answer) then ends at its next look at the process.
            self._server.stop()
            self._thread.join(DISCARD_SECONDS)
        finally:
            subprocess_server_logger.disabled = disabled

    def _started_process(self):
        """The server's process, once the thread has started it (at once: a port and a
        Popen); None if the thread ended without one."""
        deadline = time.monotonic() + DISCARD_SECONDS
        while self._server.server_process is None and self._thread.is_alive():
            if time.monotonic() > deadline:
                self._thread.join()  # as before: the start ends, then the server is stopped
                break
            time.sleep(0.01)
        return self._server.server_process


def start_early() -> EarlyStart:
    """Start the temporary server a run will use now, in a thread, while this process goes on
    importing and checking its inputs. Started at the run's first Prefect API call instead,
    as Prefect does, the server's start (~3 s) came after the command's imports and checks
    (~5 s of one core) and the run waited for it; here it takes the other core meanwhile.

    `ready()` must come before the run's first Prefect API call: Prefect's own start, at that
    call, returns at once for a server that is starting (its `running` is set before the
    server answers). A run refused before its flow calls `discard()`. A process that ends
    otherwise (Ctrl-C) waits for the thread at exit, then stops the server through the
    handler Prefect registered when it started it.

    Prefect's "Starting temporary server on ..." line is not shown (Prefect's logging is not
    set up yet when the thread starts): a refused run says nothing about a server.

    Starts nothing where Prefect would start nothing (PREFECT_API_URL set, ephemeral mode off).
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return EarlyStart()
    check_room_for_a_new_database()
    make_database_folder()
    prepare()
    from prefect.server.api.server import SubprocessASGIServer

    return EarlyStart(SubprocessASGIServer())  # Prefect's one instance, which its client finds


def database_path() -> Path | None:
    """The SQLite database Prefect's temporary server serves (None: not SQLite)."""
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL

    url = PREFECT_API_DATABASE_CONNECTION_URL.value() or ""
    return Path(url.split(":///", 1)[-1]) if url.startswith("sqlite") else None


def may_hold_flow_run(flow_run_id: str) -> bool:
    """False only where this process would start Prefect's temporary server and its database
    surely has no flow run `flow_run_id` (no such file, or no such row): a command that only
    updates that flow run (`eval import`) then starts no server for nothing (~5-15 s; with
    no database, a new one and its migrations). Any other case is the server's to answer."""
    from prefect.settings import PREFECT_API_URL

    database = database_path()
    if PREFECT_API_URL.value() or database is None:
        return True
    if not database.exists():
        return False
    try:
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)) as db:
            row = db.execute("SELECT 1 FROM flow_run WHERE id = ?", (str(flow_run_id),))
            return row.fetchone() is not None
    except sqlite3.Error:  # a schema this does not know, a file locked for long: ask the server
        return True


def make_database_folder() -> None:
    """The folder of the server's SQLite database, made with its parents. Prefect makes
    PREFECT_HOME without them: under a folder that is not there the server could not open
    its database, exited, and was started again on another port, over and over, for the
    180 s of its start-up timeout (a traceback each time) before the run failed."""
    database = database_path()
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)


def check_room_for_a_new_database() -> None:
    """Raise the disk-full error (the command line's one line, exit 3) before the server
    starts, where it would create its SQLite database on a disk without room for it."""
    database = database_path()
    if database is None or database.exists():
        return
    folder = next(p for p in (database.parent, *database.parents) if p.exists())
    if shutil.disk_usage(folder).free < NEW_DATABASE_ROOM:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(database))
