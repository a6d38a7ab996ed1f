"""The pipeline process's garbage collector: fewer full collections, none over what it imported.

Before its first stage a run's process holds about a million Python objects
(torch, transformers, Prefect, MLflow, pandas and their modules). Python's
full collection scans every one, 0.35 s on a 2-core machine, and in about
half of the smoke runs measured (bench/overhead.py) the stages' bookkeeping
set one off: that pause was a large part of the orchestrated run's overhead
and of its spread from run to run.
"""

import gc

FULL_COLLECTION_EVERY = 100
"""Second-generation collections between full ones (Python's default: 10)."""

_settled = False


def settle() -> None:
    """Once per process, when a pipeline run starts: freeze what is alive (the imported
    modules, which live as long as the process: never scanned again, never freed) and make
    full collections ten times rarer. Cyclic garbage still goes at the first two levels
    as soon as before; only what survived both waits longer."""
    global _settled
    if _settled:
        return
    gc.freeze()
    first, second, _ = gc.get_threshold()
    gc.set_threshold(first, second, FULL_COLLECTION_EVERY)
    _settled = True
