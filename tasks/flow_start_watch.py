"""One line when Prefect has not started the flow run a while after `instructflow run` asked.

Before the flow's first line runs, Prefect's client asks its API to create the flow run
and set it running. A server whose database is locked (a backup, another process holding
SQLite's write lock) answers late or with 503, and the client asks again on its own,
printing nothing: the command sat silent until the database was free. The wait itself is
right (the run starts once the server answers); the silence is what this ends.
"""

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from instructflow.tasks import outages

# A flow run starts within seconds on a quiet server; a locked database holds each ask for
# its busy timeout (30-60 s) before the 503, so twenty seconds says so before the first 503.
SLOW_START_SECONDS = 20.0
SLOW_START = (
    "instructflow: Prefect's API ({url}) has not started the flow run after {seconds:.0f} s:"
    " the server is busy (its database locked, most likely) or slow; Prefect's client keeps"
    " asking, and the run starts once it answers"
)

_started = threading.Event()


def flow_started() -> None:
    """Called by the flow's first line: the ask was answered."""
    _started.set()


@contextmanager
def said_if_slow(seconds: float | None = None) -> Iterator[None]:
    """Around a flow call: the SLOW_START line on stderr, once, if the flow's first line has not
    run `seconds` (SLOW_START_SECONDS) after the call."""
    seconds = SLOW_START_SECONDS if seconds is None else seconds
    _started.clear()

    def say() -> None:
        if not _started.is_set():
            url = outages.prefect_api_url() or "the temporary server"
            print(SLOW_START.format(url=url, seconds=seconds), file=sys.stderr, flush=True)

    timer = threading.Timer(seconds, say)
    timer.daemon = True  # never holds the process open
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
