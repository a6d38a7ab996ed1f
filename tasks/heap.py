"""Python's garbage collector while a command starts: off while it imports, then told to leave the imports alone.

`instructflow run` imports torch, transformers, Prefect, MLflow and pandas: about
a million objects that live as long as the process. While they pile up, Python
runs a full collection each time the heap grows by a quarter, ten of them, each
scanning everything imported so far (1.0 s of a smoke run's 25 s, measured);
and in the run itself a full collection scans them all again (0.3 s, in most
smoke runs). So the command line turns collection off before the command
imports its modules (`imports_begin`), and before its flow starts
(`imports_done`) collects once, freezes what is left (Python's `gc.freeze`:
never scanned again, never freed, as modules are not anyway) and turns
collection back on. Freezing does not change when a model's memory is freed:
that is reference counting, not the collector.
"""

import gc


def imports_begin() -> None:
    """Collection off until `imports_done` (the command line, before a command's imports)."""
    gc.disable()


def imports_done() -> None:
    """One full collection (garbage made while importing is not frozen with the rest),
    then everything alive now frozen, and collection on again."""
    gc.collect()
    gc.freeze()
    gc.enable()
