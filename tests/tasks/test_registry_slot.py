"""The registry's slot: asked again quickly while Prefect's server is busy, held by one holder at a time."""

import threading
import time
import uuid

import httpx
import pytest
from prefect.client.orchestration import get_client

from instructflow.tasks import concurrency, prefect_busy


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(concurrency.time, "sleep", slept.append)
    return slept


def _answers(*answers):
    """A call that raises or returns each of `answers` in turn."""
    left = list(answers)

    def call():
        answer = left.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return call


def test_busy_server_is_asked_again_after_50_ms_then_twice_as_long(waits):
    # given a server that answers busy twice, then the lease
    call = _answers(prefect_busy.ServerBusy("503"), prefect_busy.ServerBusy("503"), "lease")
    # then the third ask gets it, after waits of 0.05 and 0.1 s (Prefect's client would wait 2 s)
    assert prefect_busy.asked_until_answered(call) == "lease"
    assert waits == [0.05, 0.1]


def test_other_errors_are_not_asked_again(waits):
    # given a refusal that no wait changes
    call = _answers(RuntimeError("404"))
    # then it is raised at once
    with pytest.raises(RuntimeError):
        prefect_busy.asked_until_answered(call)
    assert waits == []


def test_a_server_busy_for_good_fails_after_about_50_seconds_of_waits(waits):
    call = _answers(*[prefect_busy.ServerBusy("503")] * prefect_busy.ASKS)
    with pytest.raises(prefect_busy.ServerBusy) as busy:
        prefect_busy.asked_until_answered(call)
    # and its error says how long it was asked (the one line a run then ends with)
    assert str(busy.value) == (
        "503 to each of 11 asks over 51 s (busy: its database locked, most likely)"
    )
    # waits of 0.05 s doubling: 0.05 * (2**10 - 1) = 51.15 s in all, as patient as Prefect's client
    assert len(waits) == prefect_busy.ASKS - 1
    assert sum(waits) == pytest.approx(0.05 * (2**10 - 1))


def test_no_asks_is_a_caller_error_and_nothing_is_called():
    called = []
    with pytest.raises(ValueError, match="asks must be >= 1, got 0"):
        prefect_busy.asked_until_answered(lambda: called.append(1), asks=0)
    assert called == []


def test_the_gate_asks_a_busy_server_as_long_as_it_waits_for_a_lost_one(waits, capsys):
    from instructflow.tasks import outages

    # given a server busy for good, asked for the gate's slot
    call = _answers(*[prefect_busy.ServerBusy("503")] * prefect_busy.GATE_ASKS)
    with pytest.raises(prefect_busy.ServerBusy) as busy:
        prefect_busy.asked_until_answered(call, prefect_busy.GATE_ASKS, "asking longer")
    # then it waited the doubling waits, then 25.6 s a time, at least OUTAGE_WAIT_SECONDS in all
    assert waits[: prefect_busy.ASKS - 1] == pytest.approx([0.05 * 2**k for k in range(10)])
    assert waits[prefect_busy.ASKS - 1 :] == pytest.approx([25.6] * 10)
    assert outages.OUTAGE_WAIT_SECONDS <= sum(waits) < outages.OUTAGE_WAIT_SECONDS + 25.6
    # and said once that it asks longer, once Prefect's own patience (~51 s) was spent
    assert capsys.readouterr().out == "asking longer\n"
    assert "503 to each of 21 asks over 307 s" in str(busy.value)


class _NoServer:
    """A client context whose slot release does nothing."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def release_concurrency_slots_with_lease(self, lease_id):
        pass


def test_the_gate_is_patient_with_a_busy_server_and_promote_is_not(monkeypatch):
    asked = []
    monkeypatch.setattr(concurrency, "_lease", lambda _, asks: asked.append(asks) or uuid.uuid4())
    monkeypatch.setattr(concurrency, "impatient_client", _NoServer)
    # when the gate (waits for a lost server) and promote (does not) take the slot
    for outage_wait in (True, False):
        with concurrency.registry_slot(outage_wait=outage_wait):
            pass
    # then the gate asks a busy server GATE_ASKS times (~5 min), promote ASKS (~51 s)
    assert asked == [prefect_busy.GATE_ASKS, prefect_busy.ASKS]


def _serve_with(monkeypatch, server) -> None:
    """Prefect's clients that concurrency (and prefect_busy) open answered by `server`."""
    real_get_client = concurrency.get_client

    def get_client(**kwargs):
        kwargs["httpx_settings"] = {
            **kwargs.get("httpx_settings", {}),
            "transport": httpx.MockTransport(server),
        }
        return real_get_client(**kwargs)

    monkeypatch.setattr(concurrency, "get_client", get_client)
    monkeypatch.setattr(prefect_busy, "get_client", get_client)


def test_prefects_client_hands_a_busy_answer_over_without_sleeping(
    prefect_harness, monkeypatch, waits
):
    # given Prefect's server answering the acquisition 503 once, then with a lease
    lease_id = uuid.uuid4()
    acquisitions = []

    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/increment-with-lease"):
            acquisitions.append(request)
            if len(acquisitions) == 1:
                return httpx.Response(503, json={"exception_message": "Service Unavailable"})
            return httpx.Response(200, json={"lease_id": str(lease_id), "limits": []})
        if request.url.path.endswith("/csrf-token"):
            return httpx.Response(
                422, json={"detail": "CSRF protection is disabled."}
            )  # as Prefect
        return httpx.Response(200, json={})

    _serve_with(monkeypatch, server)
    # when the slot is taken through the project's client
    with prefect_busy.impatient_client() as client:
        got = prefect_busy.asked_until_answered(lambda: concurrency._acquire(client))
    # then the lease came on the second ask, and the one wait was ours, 50 ms (`waits` records
    # every time.sleep: Prefect's client sleeps ~2 s after a 503 before asking again)
    assert got == lease_id and len(acquisitions) == 2
    assert waits == [0.05]


def _active_slots() -> int:
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(concurrency.REGISTRY).active_slots


def test_one_holder_at_a_time_and_freed_after(prefect_harness, capsys):
    # given the registry limit, and a holder inside registry_slot
    concurrency.ensure_limits()
    second_entered = threading.Event()

    def second_holder():
        with concurrency.registry_slot():
            second_entered.set()

    with concurrency.registry_slot():
        assert _active_slots() == 1
        other = threading.Thread(target=second_holder)
        other.start()
        # then a second holder waits while the first is inside, and says so once
        assert not second_entered.wait(1.5)
        assert capsys.readouterr().out.count(concurrency.REGISTRY_WAIT) == 1
        released_at = time.monotonic()
    # and gets the slot once the first leaves (Prefect's 423 says when to ask again)
    assert second_entered.wait(30)
    other.join(30)
    assert time.monotonic() - released_at < 30
    # and the slot is free again after both
    assert _active_slots() == 0


def test_a_limit_another_run_created_between_our_read_and_create_is_not_an_error(monkeypatch):
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    # given two seeds of a sweep starting together: both read no limit, the other creates it first
    class Client:
        created = 0

        def __enter__(self):
            return self

        def __exit__(self, *_):
            return False

        def read_global_concurrency_limit_by_name(self, name):
            raise ObjectNotFound(http_exc=None)

        def create_global_concurrency_limit(self, limit):
            Client.created += 1
            raise ObjectAlreadyExists(http_exc=None)

    monkeypatch.setattr(concurrency, "get_client", lambda sync_client: Client())
    # then this one's start goes on: the limit exists, which is all it needs
    concurrency.ensure_limits()
    assert Client.created == 1


def _server_gone_then_back(monkeypatch, gone_for: int):
    """Prefect's server refusing connections for its first `gone_for` requests, then giving
    the lease; /health answers once it is back. Returns the requests seen."""
    from instructflow.tasks import outages

    seen: list[str] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if len(seen) <= gone_for:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if request.url.path.endswith("/increment-with-lease"):
            return httpx.Response(200, json={"lease_id": str(uuid.uuid4()), "limits": []})
        if request.url.path.endswith("/csrf-token"):
            return httpx.Response(422, json={"detail": "CSRF protection is disabled."})
        return httpx.Response(200, json={})

    _serve_with(monkeypatch, server)
    monkeypatch.setattr(outages, "server_answers", lambda *_: len(seen) >= gone_for)
    monkeypatch.setattr(outages.time, "sleep", lambda _s: seen.append("slept"))
    return seen


def test_a_prefect_server_lost_at_the_gate_is_waited_for_then_the_slot_taken(
    prefect_harness, monkeypatch, capsys
):
    # given Prefect's server gone (a restart) when the registry stage asks for its slot
    seen = _server_gone_then_back(monkeypatch, gone_for=1)
    # then the stage waits for it and takes the slot once it answers, and gives it back
    with concurrency.registry_slot():
        pass
    asked = [path.rsplit("/", 1)[-1] for path in seen]
    assert "increment-with-lease" in asked[1:]  # asked after the refused first request
    assert asked[-1] == "decrement-with-lease"  # and given back
    assert "Prefect's API" in capsys.readouterr().out  # said what it waits for


def test_a_prefect_server_that_stays_gone_fails_the_gate_after_the_wait(
    prefect_harness, monkeypatch
):
    from instructflow.tasks import outages

    _server_gone_then_back(monkeypatch, gone_for=10**6)
    monkeypatch.setattr(outages, "OUTAGE_WAIT_SECONDS", 0.0)
    with pytest.raises(httpx.ConnectError):
        with concurrency.registry_slot():
            pytest.fail("the slot was never taken")


def test_a_slot_that_cannot_be_given_back_is_left_to_its_lease(prefect_harness, monkeypatch):
    # given the slot taken, then Prefect's server gone before it is given back
    monkeypatch.setattr(concurrency, "_lease", lambda *_: uuid.uuid4())
    _server_gone_then_back(monkeypatch, gone_for=10**6)
    # then leaving the block does not fail: the registry is written, the lease ends by itself
    with concurrency.registry_slot():
        pass


def _orphan_the_slot() -> None:
    """Take the slot with a lease no one renews or gives back: what an increment whose answer
    was lost leaves (the client asked again, and its own slot refused it)."""
    with get_client(sync_client=True) as client:
        client.increment_concurrency_slots_with_lease(
            names=[concurrency.REGISTRY], slots=1, mode="concurrency", lease_duration=60
        )


def test_a_slot_no_live_run_can_hold_is_freed_after_its_lease_would_have_ended(
    prefect_harness, tmp_path, monkeypatch, capsys
):
    from instructflow.tasks import leftovers

    # given the registry slot taken by a lease nobody holds, on Prefect's temporary server
    # (which never frees an expired lease), and no other run of this project alive
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(tmp_path))
    monkeypatch.setattr(concurrency, "ORPHAN_SECONDS", 1.0)
    concurrency.ensure_limits()
    _orphan_the_slot()
    # when a gate asks for it, then it gets it once refused ORPHAN_SECONDS, saying why
    started = time.monotonic()
    with concurrency.registry_slot():
        assert _active_slots() == 1
    assert time.monotonic() - started < 30
    assert "registry's slot stayed taken 1 s with no other run of this project alive" in (
        capsys.readouterr().out
    )
    # but while another run of this project lives (it may be that run's gate), it waits
    _orphan_the_slot()
    monkeypatch.setattr(leftovers, "alive_in_other_processes", lambda: True)
    entered = threading.Event()

    def gate():
        with concurrency.registry_slot():
            entered.set()

    waiting = threading.Thread(target=gate, daemon=True)
    waiting.start()
    assert not entered.wait(4)
    monkeypatch.setattr(leftovers, "alive_in_other_processes", lambda: False)  # it ended
    assert entered.wait(30)
    waiting.join(30)
    assert _active_slots() == 0
