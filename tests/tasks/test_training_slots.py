"""tasks.concurrency training slots: file locks per project root, taken in turn, raised for a sweep."""

import os
import subprocess
import sys
import threading
import time

import pytest

from instructflow.tasks import concurrency


@pytest.fixture(autouse=True)
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(tmp_path))
    monkeypatch.setattr(concurrency, "POLL_SECONDS", 0.01)
    return tmp_path


def test_one_slot_by_default_and_free_when_nobody_trains():
    assert concurrency.training_slots() == 1
    assert not concurrency.training_slot_taken()
    with concurrency.training_slot():
        assert concurrency.training_slot_taken()
    assert not concurrency.training_slot_taken()


def test_a_second_holder_waits_for_the_first():
    events: list[str] = []
    first_holds = threading.Event()

    def first():
        with concurrency.training_slot():
            first_holds.set()
            time.sleep(0.2)
            events.append("first out")

    def second():
        first_holds.wait()
        with concurrency.training_slot():
            events.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert events == ["first out", "second in"]


def test_a_raised_limit_lets_two_hold_at_once():
    with concurrency.training_slots_at_least(2), concurrency.training_slot():
        done = threading.Event()

        def second():
            with concurrency.training_slot():
                done.set()

        t = threading.Thread(target=second)
        t.start()
        assert done.wait(60)  # the second slot was free (with one slot it would wait forever)
        t.join()


def test_the_limit_is_raised_inside_and_restored_after():
    with concurrency.training_slots_at_least(3):
        assert concurrency.training_slots() == 3
    assert concurrency.training_slots() == 1


def test_the_limit_is_restored_when_the_sweep_fails():
    with pytest.raises(RuntimeError), concurrency.training_slots_at_least(2):
        raise RuntimeError("a child failed")
    assert concurrency.training_slots() == 1


def test_a_higher_limit_is_left_alone():
    with concurrency.training_slots_at_least(4):
        with concurrency.training_slots_at_least(2):
            assert concurrency.training_slots() == 4
        assert concurrency.training_slots() == 4


def test_a_dead_holder_frees_its_slot(root):
    import subprocess
    import sys

    # given a process that takes the slot and is killed while holding it
    code = (
        "import os, time\n"
        "from instructflow.tasks import concurrency\n"
        "with concurrency.training_slot():\n"
        "    print('held', flush=True)\n"
        "    time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    assert concurrency.training_slot_taken()
    child.kill()
    child.wait()
    # then the slot is free again, with nothing to clean up
    assert not concurrency.training_slot_taken()


def test_inside_a_slot_this_context_and_its_copies_hold_nothing_more():
    import contextvars

    # given a run's slot, taken once for two stages side by side
    with concurrency.training_slot():
        inside: list[bool] = []

        def stage():
            with concurrency.training_slot():  # would wait forever if it took a second slot
                inside.append(True)

        t = threading.Thread(target=contextvars.copy_context().run, args=(stage,))
        t.start()
        t.join(60)  # a thread that took a second slot would still be waiting: inside == [True]
        stage()
        assert inside == [True, True]
    # then afterwards the slot is free, and a new context takes it for real
    assert not concurrency.training_slot_taken()


def _waiter(name: str, order: list[str]) -> threading.Thread:
    def wait_then_hold():
        with concurrency.training_slot():
            order.append(name)

    thread = threading.Thread(target=wait_then_hold)
    thread.start()
    return thread


def test_a_newcomer_does_not_take_the_slot_from_one_that_waited(root, monkeypatch):
    # given a run waiting for the slot, between two of its looks at it (queued: its ticket is
    # there; a fixed pause alone let a loaded machine free the slot before it had asked)
    monkeypatch.setattr(concurrency, "POLL_SECONDS", 0.5)
    order: list[str] = []
    with concurrency.training_slot():
        waited = _waiter("waited", order)
        _wait_for_a_ticket(root)
        time.sleep(0.2)
    # when the slot is freed and another run asks for it at that moment
    newcomer = _waiter("newcomer", order)
    waited.join(60)
    newcomer.join(60)
    # then the one that waited gets it first (first come, first served)
    assert order == ["waited", "newcomer"]


def _queued_child(root) -> subprocess.Popen[str]:
    """A process that waits for the slot (held here), says when it holds it, and holds it
    until a line comes on its stdin (or it ends)."""
    code = (
        "import sys\n"
        "from instructflow.tasks import concurrency\n"
        "concurrency.POLL_SECONDS = 0.5\n"
        "with concurrency.training_slot():\n"
        "    print('child holds', flush=True)\n"
        "    sys.stdin.readline()\n"
    )
    env = {**os.environ, "INSTRUCTFLOW_ROOT": str(root)}
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def _wait_for_a_ticket(root, count: int = 1) -> None:
    queue = root / "runs" / concurrency.SLOTS_FOLDER / concurrency.QUEUE
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if queue.is_dir() and len([p for p in queue.iterdir() if p.name[0].isdigit()]) >= count:
            return
        time.sleep(0.05)
    raise AssertionError("the child never queued")


def test_a_run_waiting_in_another_process_keeps_its_place(root, monkeypatch):
    monkeypatch.setattr(concurrency, "POLL_SECONDS", 0.5)
    order: list[str] = []
    # given another process waiting for the slot this one holds
    with concurrency.training_slot():
        child = _queued_child(root)
        _wait_for_a_ticket(root)
    # when a run here asks for it as it is freed
    here = _waiter("here", order)
    # then the other process has it first (it says it waited only if it looked while the
    # slot was still held here: it may queue and find the slot free at its first look)
    first = child.stdout.readline()
    if first.startswith("waiting for a training slot"):
        first = child.stdout.readline()
    assert first.strip() == "child holds"
    assert order == []  # the child holds it until told to let go: no pause to outrun
    child.communicate("let go\n", timeout=60)
    here.join(60)
    assert order == ["here"]


def test_a_waiter_that_died_in_the_queue_holds_up_nobody(root):
    # given a process killed while it waited for the slot
    with concurrency.training_slot():
        child = _queued_child(root)
        _wait_for_a_ticket(root)
        child.kill()
        child.wait()
    # then the next run takes the free slot (its look finds the dead one's ticket unlocked)
    order: list[str] = []
    _waiter("next", order).join(60)
    assert order == ["next"]
    queue = root / "runs" / concurrency.SLOTS_FOLDER / concurrency.QUEUE
    assert [p.name for p in queue.iterdir() if p.name[0].isdigit()] == []


def test_a_queue_counter_cut_short_by_a_crash_numbers_on(root):
    # given the queue's counter file half-written when its writer died
    queue = root / "runs" / concurrency.SLOTS_FOLDER / concurrency.QUEUE
    queue.mkdir(parents=True)
    (queue / ".counter").write_text("1\x00")
    # then a run still takes the slot, and the counter is whole again
    with concurrency.training_slot():
        pass
    assert (queue / ".counter").read_text().isdigit()
