"""Prefect global concurrency limits that keep heavy work from overlapping.

- instructflow-training (1 slot): two training stages never run at once, even
  across pipeline runs: on a small machine they would only slow each other
  down (thread oversubscription costs far more than waiting).
- instructflow-registry (1 slot): one promotion gate at a time, so two runs
  finishing together cannot both judge against the same champion.

Prefect's `concurrency()` silently does nothing for a limit that does not
exist, so the pipeline creates them (idempotently) when it starts.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
)
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound

# A held slot's lease is renewed while its holder lives; a server running the
# repossessor frees it this long after the holder died (instructflow.tasks.leftovers frees
# it at once where no server would).
LEASE_SECONDS = 60.0  # the shortest lease Prefect accepts
TRAINING = "instructflow-training"
REGISTRY = "instructflow-registry"


def ensure_limits() -> None:
    with get_client(sync_client=True) as client:
        for name in (TRAINING, REGISTRY):
            try:
                client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )


@contextmanager
def training_slot() -> Iterator[None]:
    with concurrency(TRAINING, occupy=1, lease_duration=LEASE_SECONDS):
        yield


@contextmanager
def registry_slot() -> Iterator[None]:
    with concurrency(REGISTRY, occupy=1, lease_duration=LEASE_SECONDS):
        yield


@contextmanager
def training_slots_at_least(slots: int) -> Iterator[None]:
    """Let `slots` training stages run at once while inside, then put the limit back.

    A seed sweep runs cores // threads seeds at once, each pinned to its
    threads: with the one default slot its children would train one after
    another, whatever the cores. The limit stays global, so all training at
    once (the sweep's and any other run's) still fits in cores // threads.
    """
    ensure_limits()
    with get_client(sync_client=True) as client:
        before = client.read_global_concurrency_limit_by_name(TRAINING).limit
        if slots > before:
            client.update_global_concurrency_limit(
                TRAINING, GlobalConcurrencyLimitUpdate(limit=slots)
            )
    try:
        yield
    finally:
        if slots > before:
            with get_client(sync_client=True) as client:
                client.update_global_concurrency_limit(
                    TRAINING, GlobalConcurrencyLimitUpdate(limit=before)
                )
