"""The promotion gate's win-rate margin, set by hand or from a seed sweep's noise.

Two checkpoints of the same configuration trained with different seeds do
not tie at 0.5 head to head: their win rate moves by the seed noise. A gate
that promotes on "CI lower end above 0.5" alone can promote a policy that is
only another seed of the champion. A sweep (flows/sweep.py) measures that
noise (gate_noise.win_margin: the largest distance from 0.5 between its
seeds' candidates); the gate can require 0.5 + that margin.
"""

import json
from pathlib import Path


def resolve(margin: float, sweep_aggregate: str | None) -> tuple[float, str]:
    """(margin, where it came from): the sweep's measured noise if a sweep file is named, else the setting."""
    if not sweep_aggregate:
        return margin, "setting gate.win_margin"
    path = Path(sweep_aggregate)
    try:
        aggregate = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"gate.win_margin_from: cannot read {path}: {error}") from error
    noise = aggregate.get("gate_noise")
    if not noise or "win_margin" not in noise:
        raise ValueError(
            f"gate.win_margin_from: {path} has no gate_noise.win_margin (not a sweep aggregate?)"
        )
    pairs = ", ".join(
        f"{p['seeds'][0]} vs {p['seeds'][1]}: {p['win_rate']:.3f}" for p in noise["pairs"]
    )
    sweep_id = aggregate.get("sweep", {}).get("mlflow_run_id", "?")
    profile = aggregate.get("provenance", {}).get("profile", "?")
    source = (
        f"seed sweep {sweep_id} ({path}, profile {profile}): largest distance from 0.5 of "
        f"{noise.get('policy', 'candidate')} head to head between seeds ({pairs})"
    )
    return float(noise["win_margin"]), source
