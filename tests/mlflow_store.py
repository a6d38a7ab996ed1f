"""New SQLite MLflow stores in a test process start from one migrated per process.

MLflow builds an empty store by creating its first tables and then running every
Alembic migration since (one transaction each): about 1 s of CPU and a few more
of waiting on the disk for each new store, and the suite makes a new store for
most tests that touch MLflow (a project root, a test's own registry). Here the
first new store of the process is built by MLflow itself; its schema and rows
(the Alembic revision included, no experiment yet) are kept as SQL, and each
later new store gets that SQL in one transaction instead: the same tables, the
same revision, and MLflow then adds its Default experiment as it would.
Other databases than SQLite files, and processes the tests start (CLI runs,
servers), build their stores as MLflow does.
"""

import sqlite3
import threading

_lock = threading.Lock()
_dump: list[str] = []  # the migrated empty store, as one SQL script; empty until made


def _sqlite_file(engine) -> str | None:
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return url.database


def install() -> None:
    """Make MLflow's `_initialize_tables` (an empty database's set-up) replay the first one."""
    from mlflow.store.db import utils

    initialize = utils._initialize_tables
    if getattr(initialize, "replays_first_store", False):
        return

    def initialize_tables(engine) -> None:
        path = _sqlite_file(engine)
        if path is None:
            initialize(engine)
            return
        with _lock:
            if not _dump:
                initialize(engine)  # MLflow's own set-up, once
                with sqlite3.connect(path) as source:
                    _dump.append("\n".join(source.iterdump()))
                return
        connection = engine.raw_connection()
        try:
            connection.driver_connection.executescript(_dump[0])
        finally:
            connection.close()

    initialize_tables.replays_first_store = True
    utils._initialize_tables = initialize_tables
