"""heap.settle: what a run's process imported is frozen once, and full collections are rarer."""

import gc

import pytest

from instructflow.tasks import heap


@pytest.fixture
def fresh_process_gc(monkeypatch):
    """As in a process that has not settled yet; the collector's state put back after."""
    threshold = gc.get_threshold()
    monkeypatch.setattr(heap, "_settled", False)
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_settle_freezes_what_is_alive_once_and_makes_full_collections_rarer(fresh_process_gc):
    first, second, _ = gc.get_threshold()
    alive_before = len(gc.get_objects())
    heap.settle()
    frozen = gc.get_freeze_count()
    assert frozen >= alive_before  # what was alive is in the permanent generation,
    assert len(gc.get_objects()) < frozen // 10  # which collections no longer scan
    assert gc.get_threshold() == (first, second, heap.FULL_COLLECTION_EVERY)
    # a second run in the same process freezes nothing more: its objects may become garbage
    later = [[i] for i in range(1000)]
    heap.settle()
    assert gc.get_freeze_count() == frozen
    assert later[-1] == [999]
