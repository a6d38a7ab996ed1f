"""Two reports' figures compared exactly (`instructflow compare --exact`): each leaf of the
figure blocks by its path, the machine's measurements (time, throughput, memory) apart."""

from typing import Any

FIGURE_BLOCKS = ("labelers", "reward_model", "judge", "policies")
"""The report's blocks of figures (the rest say where, when and what was decided)."""


def leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of a JSON tree by its path (a/b/c); a list is one leaf."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out |= leaves(value, f"{prefix}{key}/")
        return out
    return {prefix.rstrip("/"): tree}


MEASUREMENT_WORDS = frozenset({"seconds", "second", "memory", "mb", "throughput"})
"""Words of a figure's name (split at _) that make it a reading of the machine or process:
wall time, throughput, peak memory (peak_memory_mb in an own-data run's reward_model block).
Runs that computed the same result differ in these."""


def is_measurement(path: str) -> bool:
    """Whether the figure at `path` (a/b/c) is a machine measurement, not part of the result."""
    return bool(set(path.rsplit("/", 1)[-1].split("_")) & MEASUREMENT_WORDS)


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, str]]:
    first = leaves({k: a.get(k) for k in FIGURE_BLOCKS})
    second = leaves({k: b.get(k) for k in FIGURE_BLOCKS})
    return [
        (path, f"{path}: {first.get(path, '(absent)')} -> {second.get(path, '(absent)')}")
        for path in sorted(first.keys() | second.keys())
        if first.get(path, ...) != second.get(path, ...)
    ]


def figure_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Each figure of FIGURE_BLOCKS that is not exactly the same in reports a and b (or is in
    one only), as "path: value in a -> value in b"; machine measurements aside."""
    return [line for path, line in _differences(a, b) if not is_measurement(path)]


def measurement_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The machine measurements (is_measurement) that differ, as figure_differences words them."""
    return [line for path, line in _differences(a, b) if is_measurement(path)]
