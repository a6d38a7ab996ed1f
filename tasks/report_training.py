"""The report's `training` block: how each training stage trained, not what it scored."""

from collections.abc import Callable
from typing import Any

from instructflow.tasks.model_card import TRAINING_READINGS


def training_block(metrics_by_stage: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """The report's `training` block: each training stage's readings of its own training
    (TRAINING_READINGS: the share of weights that trained, its own peak memory and its
    process's), from its metrics (`sft/trainable_fraction`, `rm/peak_memory_mb`, ...),
    under the stage's name as `run.stage_seconds` names it. A stage whose result records none (a cached result of an
    older version) is left out rather than shown as zeros."""
    block = {}
    for stage, metrics in metrics_by_stage.items():
        readings = {name.split("/", 1)[-1]: value for name, value in metrics.items()}
        kept = {name: readings[name] for name in TRAINING_READINGS if name in readings}
        if kept:
            block[stage] = kept
    return block


# report.md's column headers: the field's name, and which of the two peaks it is (the
# stage's own reads as what a stage needs, which it is not: its process held more).
HEADERS = {
    "peak_memory_mb": "peak_memory_mb (stage's own, above its process at start)",
    "process_peak_memory_mb": "process_peak_memory_mb (whole process)",
}


def training_lines(report: dict[str, Any], fmt: Callable[[Any], str]) -> list[str]:
    """report.md's Training table: one row per training stage, how much of it trained and its
    peak memory, its own and its process's (`fmt`: how report.md writes a figure)."""
    training = report.get("training")
    if not training:  # a report of an older version, or of a run that failed early
        return []
    headers = [HEADERS.get(name, name) for name in TRAINING_READINGS]
    lines = ["", "## Training", "", "| stage | " + " | ".join(headers) + " |"]
    lines.append("|" + " --- |" * (len(TRAINING_READINGS) + 1))
    return lines + [
        f"| {stage} | " + " | ".join(fmt(row.get(name)) for name in TRAINING_READINGS) + " |"
        for stage, row in training.items()
    ]
