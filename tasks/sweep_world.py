"""What a seed sweep says about the world beyond the policies' headline figures.

The figures a report holds once per run (labelers' agreement, the reward
model's accuracy per task family, the held-out judge, each policy's gold
score per family), summarised over seeds with each seed's value kept, so a
claim about them (scripts/claims.py) can be checked in every seed.
"""

from collections.abc import Mapping
from typing import Any

from instructflow.tasks.sweep_stats import seed_summary

# The judge's figures, by their place in a report's `judge` block.
JUDGE_FIGURES = {
    "accuracy_heldout_pairs": ("accuracy_heldout_pairs",),
    "accuracy_vs_gold": ("accuracy_vs_gold",),
    "agreement_judge": ("agreement_with_gold", "judge"),
    "agreement_heldout_labelers": ("agreement_with_gold", "heldout_labelers"),
    "agreement_judge_unseen_prompts": ("agreement_with_gold", "unseen_prompts", "judge"),
    "agreement_heldout_labelers_unseen_prompts": (
        "agreement_with_gold",
        "unseen_prompts",
        "heldout_labelers",
    ),
}
# The judge's yes/no verdicts, kept per seed (a mean of booleans would hide which seed failed).
JUDGE_VERDICTS = ("trustworthy", "agreement_within_margin")


def summary(per_seed: Mapping[int, float]) -> dict[str, Any]:
    """Each seed's value beside the mean, sd, min and max over seeds."""
    seeds = sorted(per_seed)
    values = [float(per_seed[s]) for s in seeds]
    return {"per_seed": {str(s): v for s, v in zip(seeds, values, strict=True)}} | seed_summary(
        values
    )


def _dig(row: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(row, Mapping) or key not in row:
            return None
        row = row[key]
    return row


def _over_seeds(reports: Mapping[int, Mapping[str, Any]], path: tuple[str, ...]) -> dict | None:
    """The summary of one figure if every seed's report has it, else None."""
    values = {s: _dig(r, path) for s, r in reports.items()}
    if any(v is None or isinstance(v, bool) for v in values.values()):
        return None
    return summary(values)


def _keys_in_all(reports: Mapping[int, Mapping[str, Any]], path: tuple[str, ...]) -> list[str]:
    """Keys of a mapping present in every seed's report, in the first seed's order."""
    blocks = [_dig(r, path) or {} for r in reports.values()]
    return [k for k in blocks[0] if all(k in b for b in blocks[1:])]


def world_figures(reports: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Labelers, reward model by family, judge and per-family gold, each summarised over seeds."""
    out: dict[str, Any] = {}
    agreement = _over_seeds(reports, ("labelers", "pairwise_agreement"))
    if agreement:
        out["labelers_pairwise_agreement"] = agreement
    by_family = ("reward_model", "accuracy_vs_gold_by_family")
    out["reward_model_by_family"] = {
        family: entry
        for family in _keys_in_all(reports, by_family)
        if (entry := _over_seeds(reports, (*by_family, family)))
    }
    judge = {
        name: entry
        for name, path in JUDGE_FIGURES.items()
        if (entry := _over_seeds(reports, ("judge", *path)))
    }
    for verdict in JUDGE_VERDICTS:
        values = {s: _dig(r, ("judge", verdict)) for s, r in reports.items()}
        if all(isinstance(v, bool) for v in values.values()):
            judge[verdict] = {str(s): values[s] for s in sorted(values)}
    out["judge"] = judge
    out["gold_by_family"] = {}
    for policy in _keys_in_all(reports, ("policies",)):
        families = _keys_in_all(reports, ("policies", policy, "per_family"))
        out["gold_by_family"][policy] = {
            family: entry
            for family in families
            if (
                entry := _over_seeds(
                    reports, ("policies", policy, "per_family", family, "gold_score")
                )
            )
        }
    return out
