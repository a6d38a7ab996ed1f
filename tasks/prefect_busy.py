"""Prefect's server answering "busy" (503: its SQLite database locked; 429, 502): asked again
soon, and for how long.

Prefect's own client sleeps 2 s before asking again (even with its retries set to 0); here a
busy answer reaches the caller at once (`impatient_client`) and `asked_until_answered` asks
again after 50 ms, then twice as long each time, as patient in all (~51 s) as Prefect's
client. The gate's registry slot is asked longer (`GATE_ASKS`): the stages before it are
done, so a busy server gets as long as a lost one (outages.OUTAGE_WAIT_SECONDS).
"""

import math
import time
from collections.abc import Callable
from typing import TypeVar

import httpx
from prefect.client.orchestration import get_client

from instructflow.tasks import outages
from instructflow.tasks.outages import ServerBusy

T = TypeVar("T")

BUSY = {429, 502, 503}
FIRST_WAIT_SECONDS = 0.05
ASKS = 11  # waits of 0.05, 0.1, ... 25.6 s: ~51 s in all, Prefect's client's patience
LONGEST_WAIT_SECONDS = FIRST_WAIT_SECONDS * 2 ** (ASKS - 2)  # 25.6 s; later asks wait as long
_DEFAULT_PATIENCE = FIRST_WAIT_SECONDS * (2 ** (ASKS - 1) - 1)  # 51.15 s
GATE_ASKS = ASKS + math.ceil(
    (outages.OUTAGE_WAIT_SECONDS - _DEFAULT_PATIENCE) / LONGEST_WAIT_SECONDS
)  # 21: ~307 s


def _raise_if_busy(response: httpx.Response) -> None:
    if response.status_code in BUSY:
        raise ServerBusy(f"Prefect's server answered {response.status_code}")


def impatient_client():
    """Prefect's sync client, but a busy answer reaches the caller at once (ServerBusy)."""
    hooks = {"event_hooks": {"response": [_raise_if_busy]}}
    return get_client(sync_client=True, httpx_settings=hooks)


def asked_until_answered(call: Callable[[], T], asks: int = ASKS, long_wait: str = "") -> T:
    """`call()`, asked again while it raises ServerBusy, `asks` times in all: after 50 ms,
    then twice as long each time, at most LONGEST_WAIT_SECONDS. `long_wait` is printed once
    when ASKS asks were busy and more are to come (the wait grows past Prefect's patience)."""
    if asks < 1:
        raise ValueError(f"asks must be >= 1, got {asks}")
    wait, waited = FIRST_WAIT_SECONDS, 0.0
    for ask in range(1, asks + 1):
        try:
            return call()
        except ServerBusy as error:
            if ask == asks:  # the caller's error, saying how patient this was
                raise ServerBusy(
                    f"{error} to each of {asks} asks over {waited:.0f} s (busy: its database"
                    " locked, most likely)"
                ) from None
            if ask == ASKS and long_wait:
                print(long_wait, flush=True)
            time.sleep(wait)
            waited, wait = waited + wait, min(2 * wait, LONGEST_WAIT_SECONDS)
    raise AssertionError("unreachable: the last ask returns or raises")
