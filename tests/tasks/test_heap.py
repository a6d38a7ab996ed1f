"""The command line's start: collection off while importing, then the imports frozen."""

import gc
import weakref

import pytest

from instructflow.tasks import heap


class Node:
    pass


@pytest.fixture
def gc_restored():
    yield
    gc.unfreeze()
    gc.enable()


def test_imports_done_frees_cycles_made_while_importing_and_freezes_the_rest(gc_restored):
    # given collection off, a cycle that became garbage and an object still in use
    heap.imports_begin()
    assert not gc.isenabled()
    garbage = Node()
    garbage.self = garbage
    gone = weakref.ref(garbage)
    del garbage
    kept = Node()
    gc.unfreeze()
    # when the imports are done
    heap.imports_done()
    # then the garbage cycle was freed, not frozen with the rest
    assert gone() is None
    # and what is alive is frozen (no collection scans it again), and collection is on
    assert gc.get_freeze_count() > 0
    assert not any(obj is kept for obj in gc.get_objects())
    assert gc.isenabled()
