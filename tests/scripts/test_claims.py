"""scripts/claims.py: each claim judged in every seed, and the README block it writes."""

import json

import pytest

from tests.scripts import load_script

claims = load_script("claims")

# Per seed: gold, win vs SFT, public suite of each policy (seed 1 breaks two claims).
FIGURES = {
    "0": {
        "base": (0.0, 0.2, 0.50),
        "base_fewshot": (0.1, 0.3, 0.50),
        "flan": (0.2, 0.3, 0.45),
        "t0": (0.2, 0.3, 0.45),
        "sft": (0.5, 0.5, 0.43),
        "ppo": (0.7, 0.6, 0.42),
        "ppo_ptx": (0.7, 0.6, 0.44),
    },
    "1": {
        "base": (0.0, 0.2, 0.50),
        "base_fewshot": (0.1, 0.3, 0.50),
        "flan": (0.2, 0.3, 0.45),
        "t0": (0.6, 0.3, 0.45),
        "sft": (0.5, 0.5, 0.43),
        "ppo": (0.7, 0.49, 0.44),
        "ppo_ptx": (0.7, 0.6, 0.44),
    },
}


def aggregate() -> dict:
    policies = {}
    for policy in FIGURES["0"]:
        policies[policy] = {}
        for index, metric in enumerate(("gold_score", "win_rate_vs_sft", "public_suite_accuracy")):
            per_seed = {s: FIGURES[s][policy][index] for s in FIGURES}
            values = list(per_seed.values())
            policies[policy][metric] = {
                "per_seed": per_seed,
                "mean": sum(values) / 2,
                "sd": 0.0,
                "min": min(values),
                "max": max(values),
                "ci95": [min(values), max(values)],
                "interval_over": "seeds",
            }
    prov = {"profile": "smoke", "seeds": [0, 1], "cpu_model": "cpu", "threads": 1}
    return {"seeds": [0, 1], "policies": policies, "provenance": prov}


def test_each_claim_is_judged_in_every_seed():
    rows = {row["claim"]: row for row in claims.check(aggregate())}
    ordering, ppo_wins, ptx_wins, tax, less_tax, keeps = (
        r["claim"] for r in claims.check(aggregate())
    )
    # seed 1: T0 (0.6) beats SFT (0.5) on gold, and PPO's win rate is 0.49
    assert rows[ordering]["failed_in"] == [1] and rows[ordering]["held_in"] == [0]
    assert rows[ppo_wins]["failed_in"] == [1]
    assert rows[ptx_wins]["failed_in"] == []
    # seed 1: PPO's public suite 0.44 is not below SFT's 0.43; PPO-ptx 0.44 >= PPO in both
    assert rows[tax]["failed_in"] == [1]
    assert rows[less_tax]["failed_in"] == [] and rows[keeps]["failed_in"] == []
    assert claims.verdict(rows[ppo_wins]).startswith("NOT held: 1/2")
    assert claims.verdict(rows[ptx_wins]) == "held in every seed (2/2)"


def test_readme_block_is_replaced_between_its_markers(tmp_path):
    source = tmp_path / "aggregate.json"
    source.write_text(json.dumps(aggregate()))
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{claims.BEGIN}\nstale table\n{claims.END}\nafter\n")
    claims.main([str(source), "--readme", str(readme)])
    text = readme.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "stale table" not in text
    assert "| ppo | 0.700 [0.700, 0.700] | 0.545 [0.490, 0.600] |" in text
    assert "NOT held: 1/2 seeds (fails in seeds [1])" in text
    with pytest.raises(SystemExit):
        claims.replace_block("no markers", "x")
