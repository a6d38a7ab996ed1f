"""What keeps heavy work from overlapping: training slots, and Prefect's registry limit.

- Training slots (1 by default): two training stages of one project root
  never run at once, even across pipeline runs: on a small machine they would
  only slow each other down (thread oversubscription costs far more than
  waiting). A slot is an exclusive lock (flock) on a file under
  runs/.training-slots/: taking a free one costs nothing, and the kernel
  frees it when its holder dies, however it dies. (They were a Prefect global
  concurrency limit: on Prefect's SQLite server an acquisition that coincides
  with the server storing a task run's events is answered 503 and retried 2 s
  later, which cost about 2 s per stage: 15 s of a 50 s smoke run.) Runs
  waiting for a slot get it in the order they asked: a ticket each under
  runs/.training-slots/queue/, locked the same way, so a dead waiter's ticket
  holds up nobody.
- instructflow-registry (1 slot), a Prefect global concurrency limit: one
  promotion gate at a time, so two runs finishing together cannot both judge
  against the same champion, even on two machines sharing a Prefect server.
  Acquiring a limit that does not exist holds nothing, so the pipeline creates it
  (idempotently) when it starts. The slot is taken here rather than by
  Prefect's `concurrency()`, for the same 503 as above: Prefect's client waits
  2 s before asking again, which the registry stage paid in most runs (0.9 s
  of work took 2.7-3.5 s); here a busy answer is asked again after 50 ms,
  doubling (tasks/prefect_busy.py), for ~5 minutes at the gate (the stages before
  it are done, as for a lost server), ~51 s elsewhere (Prefect's client's patience).
"""

import fcntl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
)
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.logging import get_logger

from instructflow.tasks import outages
from instructflow.tasks.paths import runs_dir
from instructflow.tasks.prefect_busy import ASKS, GATE_ASKS, asked_until_answered, impatient_client

# A held slot's lease is renewed while its holder lives; a server running the
# repossessor frees it this long after the holder died (instructflow.tasks.leftovers frees
# it at once where no server would).
LEASE_SECONDS = 60.0  # the shortest lease Prefect accepts
REGISTRY = "instructflow-registry"

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def ensure_limits() -> None:
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(REGISTRY)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=REGISTRY, limit=1)
                )
            except ObjectAlreadyExists:  # a run started beside this one (a sweep's seed) made it
                pass


# Printed once by a registry writer kept waiting (a gate, an approval, `instructflow promote`).
REGISTRY_WAIT = (
    "waiting for the registry: another run's promotion gate (or a promotion) is writing it"
)


@contextmanager
def registry_slot(waiting: str = REGISTRY_WAIT, outage_wait: bool = True) -> Iterator[None]:
    """Hold the registry's slot while inside; wait while another run holds it, or while
    Prefect's server is lost (a restart: the stages before the gate are done and would be
    lost with the run).

    waiting: a line printed once if another holder makes this one wait.
    outage_wait: False raises a lost server's error at once (nothing done would be lost).
    """

    def lease() -> UUID:  # a busy server gets as long as a lost one, where one is waited for
        return _lease(waiting, GATE_ASKS if outage_wait else ASKS)

    why = "the registry stage takes the registry's slot there"
    lease_id = _after_outage(lease, why) if outage_wait else lease()
    stop = threading.Event()
    renewal = threading.Thread(target=_renew, args=(lease_id, stop), daemon=True)
    renewal.start()
    try:
        yield
    finally:
        stop.set()
        try:
            with impatient_client() as client:
                asked_until_answered(lambda: client.release_concurrency_slots_with_lease(lease_id))
        except SERVER_GONE as error:  # the registry is written: its lease ends by itself
            get_logger("instructflow").warning(
                "registry slot not given back (%s): Prefect frees it %.0f s after it was "
                "last renewed",
                error,
                LEASE_SECONDS,
            )


def _lease(waiting: str = "", asks: int = ASKS) -> UUID:
    unsaid = [waiting] if waiting else []  # said once, also when a busy server is asked again
    long_wait = (
        f"Prefect's API ({outages.prefect_api_url()}) stays busy (503: its database locked, most"
        " likely); the registry's slot is asked again for a few minutes more"
    )
    with impatient_client() as client:
        return asked_until_answered(lambda: _acquire(client, unsaid), asks, long_wait)


# Prefect's server not there at all (stopped, restarting), as against busy (ServerBusy).
SERVER_GONE = (httpx.ConnectError, httpx.ConnectTimeout)


def _after_outage(call: Callable[[], T], why: str) -> T:
    """`call()`, and once more if Prefect's server was gone and answers again within
    outages.OUTAGE_WAIT_SECONDS."""
    try:
        return call()
    except SERVER_GONE:
        if not outages.wait_until_answering(outages.PREFECT_API, outages.prefect_api_url(), why):
            raise
    return call()


# A holder renews its lease every LEASE_SECONDS / 2: a slot refused this long, with no other
# run of this project alive, has no holder (see _free_if_orphaned).
ORPHAN_SECONDS = 1.5 * LEASE_SECONDS


def _acquire(client, unsaid: list[str] | None = None) -> UUID:
    """A lease on one registry slot, once it is free (Prefect answers 423 while it is held);
    the lines in `unsaid` are printed (and taken out) at a 423."""
    refused_since = None
    while True:
        try:
            response = client.increment_concurrency_slots_with_lease(
                names=[REGISTRY], slots=1, mode="concurrency", lease_duration=LEASE_SECONDS
            )
            return UUID(response.json()["lease_id"])
        except httpx.HTTPStatusError as error:
            if error.response.status_code != 423:
                raise
            while unsaid:
                print(unsaid.pop(0), flush=True)
            refused_since = refused_since or time.monotonic()
            if time.monotonic() - refused_since > ORPHAN_SECONDS and _free_if_orphaned(client):
                refused_since = None
                continue
            time.sleep(float(error.response.headers.get("Retry-After", 1)))


def _free_if_orphaned(client) -> bool:
    """Free the registry slot if nothing can be holding it: no other run of this project alive
    and the server on this machine. A slot can outlive its holder there: the answer to an
    increment that took it lost on a loaded machine (the client asks again and is refused by
    its own slot), and Prefect's temporary server, which frees expired leases never (it runs
    no repossessor). A gate waited so for ever (seen in a CI run, 23 minutes)."""
    from instructflow.tasks import leftovers

    if leftovers.alive_in_other_processes() or not leftovers.prefect_api_is_local():
        return False
    client.update_global_concurrency_limit(REGISTRY, GlobalConcurrencyLimitUpdate(active_slots=0))
    print(
        f"instructflow: the registry's slot stayed taken {ORPHAN_SECONDS:.0f} s with no other "
        "run of this project alive to hold it (a lost answer, or a lease no server frees): freed",
        flush=True,
    )
    return True


def _renew(lease_id: UUID, stop: threading.Event) -> None:
    """Renew the lease at half its length until `stop` (a holder that dies stops renewing);
    a client is opened only to renew (most gates end before the first renewal)."""
    while not stop.wait(LEASE_SECONDS / 2):
        try:
            with get_client(sync_client=True) as client:
                client.renew_concurrency_lease(lease_id=lease_id, lease_duration=LEASE_SECONDS)
        except Exception as error:  # the gate goes on; only a long one could lose the slot
            get_logger("instructflow").warning("registry slot lease not renewed: %s", error)


SLOTS_FOLDER = ".training-slots"
LIMIT_FILE = "limit"
POLL_SECONDS = 0.5


def slots_folder() -> Path:
    folder = runs_dir() / SLOTS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def training_slots() -> int:
    """How many training stages of this project root may run at once (1 unless a sweep raised it)."""
    limit = slots_folder() / LIMIT_FILE
    return int(limit.read_text()) if limit.exists() else 1


_HELD: ContextVar[bool] = ContextVar("instructflow_training_slot_held", default=False)


@contextmanager
def training_slot() -> Iterator[None]:
    """Hold a training slot while inside; wait (polling) until one is free, in turn.

    Inside it, in this thread or a thread started with a copy of its context
    (two stages of one run side by side), training_slot() holds nothing more:
    the run's stages share the slot it took.
    """
    if _HELD.get():
        yield
        return
    handle = None
    with _queued() as ahead:
        waited = False
        while True:
            # Only the first in line (the first N, with N slots) looks for a free slot,
            # so a run arriving as a slot is freed does not take it from one that waited.
            if ahead() < training_slots() and (handle := _free_slot()) is not None:
                break
            if not waited:
                print(
                    "waiting for a training slot: another run of this project is training",
                    flush=True,
                )
                waited = True
            time.sleep(POLL_SECONDS)
    token = _HELD.set(True)
    try:
        yield
    finally:
        _HELD.reset(token)
        handle.close()  # closing the file releases the lock


def _free_slot():
    """The open, locked file of a free training slot, or None when every slot is held."""
    for index in range(training_slots()):
        # One open file each: flock excludes other open files, in this process too.
        handle = (slots_folder() / f"slot-{index}.lock").open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            handle.close()
    return None


QUEUE = "queue"


@contextmanager
def _queued() -> Iterator[Callable[[], int]]:
    """A ticket in the training slots' queue while inside; yields `ahead()`, how many live
    tickets were taken before it.

    A ticket is a file named by its number, locked (flock) by its waiter from before
    it is visible until after it is removed: a ticket that can be locked is a dead
    waiter's (the kernel freed its lock), skipped and removed by whoever finds it.
    """
    folder = slots_folder() / QUEUE
    folder.mkdir(exist_ok=True)
    with (folder / ".lock").open("a") as lock:  # numbers one ticket at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        counter = folder / ".counter"
        taken = [int(p.name) for p in folder.iterdir() if p.name.isdigit()]
        recorded = counter.read_text().strip() if counter.exists() else ""
        # The counter never goes back (a number is never a dead ticket's again); one cut
        # short by a crash gives way to the tickets still there.
        number = max([int(recorded) if recorded.isdigit() else 0, *taken]) + 1
        counter.write_text(str(number))
        ticket = folder / f"{number:012d}"
        staging = folder / f".{ticket.name}"
        handle = staging.open("a")
        fcntl.flock(handle, fcntl.LOCK_EX)
        staging.rename(ticket)
    try:
        yield lambda: _live_before(folder, ticket.name)
    finally:
        ticket.unlink(missing_ok=True)  # before its lock goes: never seen unlocked while named
        handle.close()


def _live_before(folder: Path, name: str) -> int:
    ahead = 0
    for ticket in sorted(p for p in folder.iterdir() if p.name.isdigit() and p.name < name):
        try:
            handle = ticket.open("r")
        except FileNotFoundError:  # its waiter got a slot, or gave up
            continue
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                ahead += 1  # its waiter is alive
                continue
        ticket.unlink(missing_ok=True)  # its waiter died
    return ahead


SLOT_DECLARED = "takes_training_slot"


def takes_training_slot(fn: F) -> F:
    """Declare stage task function `fn` as one that holds a training slot while it runs.

    Put under @task. A flow's run_stage takes the slot for such a task before the
    stage's lock (stage_lock says why that order), whatever the stage's name (sft's
    task also runs the FLAN and T0 baselines): the one list of training stages.
    """
    setattr(fn, SLOT_DECLARED, True)
    return fn


def takes_training_slot_declared(task: Any) -> bool:
    """Whether a Prefect task (or its function) was declared with @takes_training_slot."""
    return getattr(getattr(task, "fn", task), SLOT_DECLARED, False)


def training_slot_taken() -> bool:
    """Whether any training slot of this project root is held now (by any process)."""
    for index in range(training_slots()):
        with (slots_folder() / f"slot-{index}.lock").open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
    return False


@contextmanager
def training_slots_at_least(slots: int) -> Iterator[None]:
    """Let `slots` training stages run at once while inside, then put the limit back.

    A seed sweep runs cores // threads seeds at once, each pinned to its
    threads: with the one default slot its children would train one after
    another, whatever the cores. The limit stays per project root, so all
    training at once (the sweep's and any other run's) still fits in
    cores // threads.
    """
    limit = slots_folder() / LIMIT_FILE
    before = training_slots()
    if slots > before:
        limit.write_text(str(slots))
    try:
        yield
    finally:
        if slots > before:
            limit.write_text(str(before))


STAGE_LOCKS = ".stage-locks"


@contextmanager
def stage_lock(key: str) -> Iterator[None]:
    """Hold the lock of stage output `key` while inside; wait while another run holds it.

    Two runs of the same parameters (a schedule's run overlapping the one before
    it) reach the same stage keys: the one that waited finds the stage finished
    and takes it from the cache, rather than emptying and rewriting the folder the
    other run is writing or reading. Taken after the training slot, never before
    (a run holding a stage's lock never waits for a slot another holder of a stage
    lock has); a lock of this process's own is held once (two lanes never share a key).
    """
    folder = runs_dir() / STAGE_LOCKS
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{key}.lock").open("a") as handle:
        waited = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    print(f"waiting for stage {key}: another run is computing it", flush=True)
                    waited = True
                time.sleep(POLL_SECONDS)
        yield  # closing the file releases the lock
