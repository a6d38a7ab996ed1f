"""Check the README's claims about the world in every seed of a sweep, and write its tables.

    python scripts/claims.py bench/results/smoke-sweep.json
    python scripts/claims.py bench/results/smoke-sweep.json --readme README.md

Reads a sweep aggregate (reports/sweeps/<run id>/aggregate.json, or a copy
committed under bench/results/), prints each claim as held / not held with
the seeds where it failed, and with --readme rewrites the README's generated
blocks: `<!-- sweep:expect:begin -->` ... `<!-- sweep:expect:end -->` (the
sweep's provenance, the "what to expect" tables and the claims) and
`<!-- sweep:trust:begin -->` ... (seed spread beside prompt noise, the gate's
margin). tests/scripts/test_claims.py fails when the README's blocks differ
from what the aggregate they name renders to.
Exit status 0 either way: a claim that does not hold is a finding, not an error.
"""

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from instructflow.tasks.sweep_report import ordered, provenance_line, trust_table, world_lines  # noqa: E402


@dataclass(frozen=True)
class Seed:
    """One seed's figures in a sweep aggregate."""

    aggregate: dict
    seed: str

    def value(self, policy: str, metric: str) -> float:
        return self.aggregate["policies"][policy][metric]["per_seed"][self.seed]

    def rm(self, family: str) -> float:
        """The reward model's accuracy against gold on one task family."""
        return self.aggregate["world"]["reward_model_by_family"][family]["per_seed"][self.seed]

    def judge(self, verdict: str) -> bool:
        return self.aggregate["world"]["judge"][verdict][self.seed]


@dataclass(frozen=True)
class Claim:
    text: str
    # Given one seed's figures, does the claim hold?
    holds: Callable[[Seed], bool]


WIN, GOLD, PUBLIC = "win_rate_vs_sft", "gold_score", "public_suite_accuracy"
JUDGE_WIN = "judge_win_rate_vs_sft"
BASELINES = ("base_fewshot", "flan", "t0")
# The reward model's easy and hard families, as "What to expect on tiny" describes them.
RM_EASY, RM_HARD = ("harmful", "unanswerable"), ("add", "larger", "sort", "reverse", "last_word")

CLAIMS = [
    Claim(
        "The paper's ordering by gold score: base < base_fewshot, FLAN and T0 < SFT < PPO and PPO-ptx",
        lambda s: (
            s.value("base", GOLD) < min(s.value(p, GOLD) for p in BASELINES)
            and max(s.value(p, GOLD) for p in BASELINES) < s.value("sft", GOLD)
            and s.value("sft", GOLD) < min(s.value("ppo", GOLD), s.value("ppo_ptx", GOLD))
        ),
    ),
    Claim(
        "SFT, PPO and PPO-ptx above every baseline by gold score",
        lambda s: (
            min(s.value(p, GOLD) for p in ("sft", "ppo", "ppo_ptx"))
            > max(s.value(p, GOLD) for p in ("base", *BASELINES))
        ),
    ),
    Claim(
        "PPO and PPO-ptx above SFT by gold score",
        lambda s: min(s.value("ppo", GOLD), s.value("ppo_ptx", GOLD)) > s.value("sft", GOLD),
    ),
    Claim(
        "PPO is preferred to SFT (win rate vs SFT above 0.5)", lambda s: s.value("ppo", WIN) > 0.5
    ),
    Claim(
        "PPO-ptx is preferred to SFT (win rate vs SFT above 0.5)",
        lambda s: s.value("ppo_ptx", WIN) > 0.5,
    ),
    Claim(
        "PPO pays an alignment tax (public suite below SFT's)",
        lambda s: s.value("ppo", PUBLIC) < s.value("sft", PUBLIC),
    ),
    Claim(
        "PPO-ptx pays less alignment tax than PPO (public suite at least PPO's)",
        lambda s: s.value("ppo_ptx", PUBLIC) >= s.value("ppo", PUBLIC),
    ),
    Claim(
        "PPO-ptx keeps SFT's public-suite accuracy (at least SFT's)",
        lambda s: s.value("ppo_ptx", PUBLIC) >= s.value("sft", PUBLIC),
    ),
    Claim(
        "PPO-ptx keeps SFT's public-suite accuracy within the gate's 0.02 margin",
        lambda s: s.value("ppo_ptx", PUBLIC) >= s.value("sft", PUBLIC) - 0.02,
    ),
    Claim(
        "The reward model orders responses to harmful and unanswerable prompts more accurately "
        "than those to add, larger, sort, reverse and last_word",
        lambda s: min(s.rm(f) for f in RM_EASY) > max(s.rm(f) for f in RM_HARD),
    ),
    Claim(
        "The held-out judge is trustworthy (accuracy >= 0.6 on held-out users' pairs)",
        lambda s: s.judge("trustworthy"),
    ),
    Claim(
        "The held-out judge agrees with gold within 0.10 of the held-out labelers",
        lambda s: s.judge("agreement_within_margin"),
    ),
]


def check(aggregate: dict) -> list[dict]:
    """Each claim with the seeds where it held and where it did not.

    A claim whose figures the aggregate lacks (an older sweep) is marked
    unchecked, never held.
    """
    out = []
    for claim in CLAIMS:
        held, failed, missing = [], [], None
        for seed in map(str, aggregate["seeds"]):
            try:
                (held if claim.holds(Seed(aggregate, seed)) else failed).append(int(seed))
            except KeyError as error:
                missing = str(error)
                break
        row = {"claim": claim.text, "held_in": held, "failed_in": failed}
        if missing:
            row = {"claim": claim.text, "held_in": [], "failed_in": [], "missing": missing}
        out.append(row)
    return out


def verdict(row: dict) -> str:
    if "missing" in row:
        return f"not checked: the aggregate has no {row['missing']}"
    n = len(row["held_in"]) + len(row["failed_in"])
    if not row["failed_in"]:
        return f"held in every seed ({n}/{n})"
    return f"NOT held: {len(row['held_in'])}/{n} seeds (fails in seeds {row['failed_in']})"


def expect_table(aggregate: dict) -> str:
    """Mean over seeds with the seeds' range, per policy; the held-out judge's win rate
    beside the held-out labelers' where the aggregate has it."""
    policies = aggregate["policies"]
    metrics = (GOLD, WIN, JUDGE_WIN, PUBLIC)
    if not any(JUDGE_WIN in policies[p] for p in policies):
        metrics = (GOLD, WIN, PUBLIC)
    titles = {
        GOLD: "gold",
        WIN: "win vs SFT (labelers)",
        JUDGE_WIN: "win vs SFT (held-out judge)",
        PUBLIC: "public suite",
    }
    lines = [
        "| policy | " + " | ".join(f"{titles[m]}: mean [min, max]" for m in metrics) + " |",
        "| --- |" + " --- |" * len(metrics),
    ]
    for policy in ordered(policies):
        cells = []
        for metric in metrics:
            e = policies[policy].get(metric)
            cells.append("-" if e is None else f"{e['mean']:.3f} [{e['min']:.3f}, {e['max']:.3f}]")
        lines.append(f"| {policy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def marker(name: str, end: str) -> str:
    return f"<!-- sweep:{name}:{end} -->"


def blocks(aggregate: dict, source: str) -> dict[str, str]:
    """The README's generated blocks, by name: `expect` (what a tiny run gives, the claims)
    and `trust` (seed spread beside prompt noise, the gate's margin)."""
    stamp = f"<!-- generated by scripts/claims.py from {source}; do not edit by hand -->"
    expect = [
        f"Sweep `{source}`: {provenance_line(aggregate['provenance'])}.",
        "",
        "Each figure: mean over seeds [lowest seed, highest seed].",
        "",
        expect_table(aggregate),
        "",
        *world_lines(aggregate),
        "",
        "Claims, checked in every seed (`python scripts/claims.py " + source + "`):",
        "",
        *[f"- {row['claim']}: **{verdict(row)}**" for row in check(aggregate)],
    ]
    trust = [
        f"From `{source}` ({aggregate['provenance'].get('profile')} profile): the spread over",
        "training seeds beside one run's prompt-resampling interval (what a single report's",
        "`ci95` measures), and the interval that resamples seeds, then prompts.",
        "",
        trust_table(aggregate),
    ]
    noise = aggregate.get("gate_noise")
    if noise:
        trust += [
            "",
            f"Head to head, {noise['policy']} of one seed against {noise['policy']} of another "
            f"(same configuration): win rates "
            + ", ".join(f"{p['win_rate']:.3f}" for p in noise["pairs"])
            + f". A promotion gate needs a margin of about {noise['win_margin']:.3f} above 0.5 "
            "to tell a better policy from another seed of the same one: "
            f'`{{"gate": {{"win_margin_from": "{source}"}}}}` in a params file makes the '
            "gate require it (and its evidence name it).",
        ]
    return {
        name: "\n".join([marker(name, "begin"), stamp, "", *lines, "", marker(name, "end")])
        for name, lines in (("expect", expect), ("trust", trust))
    }


def replace_blocks(text: str, new: dict[str, str]) -> str:
    """Each named block of `text` replaced by its new version; every block must be there."""
    for name, block in new.items():
        begin, end = marker(name, "begin"), marker(name, "end")
        if begin not in text or end not in text:
            raise SystemExit(f"README has no {begin} ... {end} block to replace")
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("aggregate", help="a sweep's aggregate.json")
    parser.add_argument("--readme", help="rewrite this README's generated sweep blocks")
    args = parser.parse_args(argv)
    aggregate = json.loads(Path(args.aggregate).read_text())
    print(provenance_line(aggregate["provenance"]))
    for row in check(aggregate):
        label = "UNCHECKED" if "missing" in row else "NOT HELD" if row["failed_in"] else "HELD"
        print(f"{label:<9}  {row['claim']}: {verdict(row)}")
    if args.readme:
        readme = Path(args.readme)
        readme.write_text(replace_blocks(readme.read_text(), blocks(aggregate, args.aggregate)))
        print(f"rewrote the sweep blocks of {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
