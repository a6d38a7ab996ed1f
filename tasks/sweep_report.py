"""How a seed sweep's aggregate is shown: MLflow metrics, Markdown, and its provenance."""

from collections.abc import Mapping
from typing import Any

from instructflow.tasks import provenance
from instructflow.tasks.report import POLICY_NAMES

STATS = ("mean", "sd", "min", "max")


def common_provenance(reports: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """The children's provenance, which must agree on everything but the seed.

    A sweep whose children ran on different machines or software would mix
    those differences into the seed spread; it is refused rather than averaged.
    """
    seeds = sorted(reports)
    first = dict(reports[seeds[0]]["provenance"])
    for seed in seeds[1:]:
        diff = provenance.compare(first, reports[seed]["provenance"])["differences"]
        diff.pop("seed", None)
        if diff:
            raise ValueError(f"seed {seed} ran elsewhere than seed {seeds[0]}: {diff}")
    first.pop("seed", None)
    return first | {"seeds": seeds}


def flat_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """sweep/<policy>/<metric>/<stat> for the sweep's MLflow run."""
    out = {}
    for policy, metrics in result["policies"].items():
        for metric, entry in metrics.items():
            for stat in STATS:
                out[f"sweep/{policy}/{metric}/{stat}"] = entry[stat]
            out[f"sweep/{policy}/{metric}/ci_low"] = entry["ci95"][0]
            out[f"sweep/{policy}/{metric}/ci_high"] = entry["ci95"][1]
    if "gate_noise" in result:
        out["sweep/gate_noise/win_margin"] = result["gate_noise"]["win_margin"]
    return out


def ordered(policies: Mapping[str, Any]) -> list[str]:
    return [p for p in POLICY_NAMES if p in policies] + [
        p for p in policies if p not in POLICY_NAMES
    ]


def trust_table(
    result: Mapping[str, Any],
    metrics: tuple[str, ...] = ("win_rate_vs_sft", "gold_score", "public_suite_accuracy"),
) -> str:
    """One table: each figure's mean and range over seeds beside one run's prompt interval."""
    lines = [
        "| policy | metric | mean over seeds | sd | min - max | one run's prompt CI (+-) | 95% interval, seeds then prompts |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for policy in ordered(result["policies"]):
        for metric in metrics:
            entry = result["policies"][policy].get(metric)
            if entry is None:
                continue
            prompt_ci = entry.get("prompt_ci95_halfwidth")
            lines.append(
                f"| {policy} | {metric} | {entry['mean']:.3f} | {entry['sd']:.3f} | "
                f"{entry['min']:.3f} - {entry['max']:.3f} | "
                f"{'-' if prompt_ci is None else f'{prompt_ci:.3f}'} | "
                f"[{entry['ci95'][0]:.3f}, {entry['ci95'][1]:.3f}] ({entry['interval_over']}) |"
            )
    return "\n".join(lines)


def provenance_line(prov: Mapping[str, Any]) -> str:
    flags = " ".join(prov.get("cpu_flags", []))
    clean = {True: "clean", False: "DIRTY", None: "no git"}[prov.get("git_clean")]
    wall = f", {prov['wall_s'] / 60:.1f} min" if "wall_s" in prov else ""
    if "started_utc" in prov:
        wall += f" from {prov['started_utc']}"
    if "load_average" in prov:
        loads = [prov["load_average"][k][0] for k in ("start", "end")]
        wall += f" (1-minute load average {loads[0]:.1f} at the start, {loads[1]:.1f} at the end)"
    count = prov.get("workers")
    workers = f" per seed, {count} seed{'' if count == 1 else 's'} at once" if count else ""
    threads = prov.get("threads")
    threads_text = f"{threads} thread{'' if threads == 1 else 's'}"
    return (
        f"profile {prov.get('profile')}, seeds {prov.get('seeds')}, {prov.get('cpu_model')} "
        f"({flags}; torch kernels {prov.get('torch_cpu_capability')}), GPU {prov.get('gpu') or 'none'}, "
        f"{threads_text}{workers}, torch {prov.get('torch')}, transformers "
        f"{prov.get('transformers')}, commit {str(prov.get('git_commit'))[:10]} ({clean}){wall}"
    )


def to_markdown(result: Mapping[str, Any]) -> str:
    lines = ["# Seed sweep", "", provenance_line(result["provenance"]), "", trust_table(result)]
    noise = result.get("gate_noise")
    if noise:
        lines += ["", f"## Head to head between seeds ({noise['policy']})", ""]
        lines += [f"- seeds {p['seeds']}: win rate {p['win_rate']:.3f}" for p in noise["pairs"]]
        lines += [f"- gate margin from this sweep: {noise['win_margin']:.3f}"]
    return "\n".join(lines) + "\n"


def _range(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "-"
    return f"{entry['mean']:.3f} [{entry['min']:.3f}, {entry['max']:.3f}]"


def _count(verdicts: Mapping[str, bool] | None) -> str:
    if not verdicts:
        return "not recorded"
    return f"{sum(verdicts.values())}/{len(verdicts)} seeds"


def world_lines(result: Mapping[str, Any]) -> list[str]:
    """The reward model, the labelers, per-family gold and the judge, each mean [min, max]."""
    world = result.get("world")
    if not world:
        return [
            "(This aggregate has no per-family, labeler or judge figures: made before they were kept.)"
        ]
    rm = result.get("reward_model", {})
    lines = [
        f"Reward model: accuracy {_range(rm.get('accuracy_vs_gold'))} against the gold ordering "
        f"and {_range(rm.get('accuracy_heldout_labels'))} against held-out labelers, who agree "
        f"with each other {_range(world.get('labelers_pairwise_agreement'))} of the time.",
        "",
    ]
    gold = world["gold_by_family"]
    shown = [p for p in ("sft", "ppo", "ppo_ptx") if p in gold]
    # The RM's families first, then any family only the policies were scored on.
    rm_families = world["reward_model_by_family"]
    families = list(dict.fromkeys([*rm_families, *(f for p in shown for f in gold[p])]))
    lines += [
        "| family | RM accuracy vs gold | " + " | ".join(f"{p} gold" for p in shown) + " |",
        "| --- | --- | " + " | ".join("---" for _ in shown) + " |",
    ]
    for family in families:
        cells = [_range(rm_families.get(family))]
        cells += [_range(gold[p].get(family)) for p in shown]
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
    judge = world.get("judge", {})
    if judge:
        lines += [
            "",
            f"Held-out judge: accuracy {_range(judge.get('accuracy_heldout_pairs'))} on held-out "
            f"users' pairs, trustworthy (>= 0.6) in {_count(judge.get('trustworthy'))}. Agreement "
            f"with gold: judge {_range(judge.get('agreement_judge'))}, held-out labelers "
            f"{_range(judge.get('agreement_heldout_labelers'))}; on prompts the judge never "
            f"trained on, judge {_range(judge.get('agreement_judge_unseen_prompts'))} and "
            f"labelers {_range(judge.get('agreement_heldout_labelers_unseen_prompts'))}; within 0.10 of "
            f"the labelers in {_count(judge.get('agreement_within_margin'))}.",
        ]
    return lines
