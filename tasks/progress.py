"""The console line of a training loop: where it is, how far along, about how long is left.

`[sft] step 50/180 (28%, ~1 min 10 s left): train_loss=2.597, lr=0.0006`
The time left comes from the pace since the first step this process logged,
so a loop resumed from a checkpoint does not count the steps it skipped.
"""

import time


def duration_text(seconds: float) -> str:
    """<1 s, ~45 s, ~3 min 20 s, ~1 h 05 min."""
    if seconds < 0.5:
        return "<1 s"
    seconds = round(seconds)
    if seconds < 60:
        return f"~{seconds} s"
    if seconds < 3600:
        return f"~{seconds // 60} min {seconds % 60} s"
    return f"~{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    def __init__(self, label: str):
        self.label = label
        self.first: dict[str, tuple[int, float]] = {}  # unit -> (step, time) first logged

    def line(
        self,
        step: int,
        metrics: dict[str, float],
        total: int | None = None,
        unit: str = "step",
        now: float | None = None,
    ) -> str:
        """The line for `metrics` logged after `unit` `step` (0-based) of `total`."""
        shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        if total is None:
            return f"[{self.label}] {unit} {step}: {shown}"
        done = step + 1
        where = f"{unit} {done}/{total} ({100 * done / total:.0f}%"
        now = time.monotonic() if now is None else now
        first_step, first_time = self.first.setdefault(unit, (step, now))
        if step > first_step and done < total:
            left = (now - first_time) / (step - first_step) * (total - done)
            where += f", {duration_text(left)} left"
        return f"[{self.label}] {where}): {shown}"
