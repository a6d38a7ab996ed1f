"""How a seed sweep's aggregate is shown: MLflow metrics, Markdown, and its provenance."""

from collections.abc import Mapping
from typing import Any

from tasks import provenance
from tasks.report import POLICY_NAMES

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
    return (
        f"profile {prov.get('profile')}, seeds {prov.get('seeds')}, {prov.get('cpu_model')} "
        f"({flags}; torch kernels {prov.get('torch_cpu_capability')}), GPU {prov.get('gpu') or 'none'}, "
        f"{prov.get('threads')} threads, torch {prov.get('torch')}, transformers "
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
