"""Comparing two reports' figures exactly (instructflow compare --exact)."""

import json
from pathlib import Path

import pytest

from instructflow.flows.cli import main
from instructflow.tasks.report_figures import (
    figure_differences,
    is_measurement,
    leaves,
    measurement_differences,
)


def report(ppo_gold: float, **extra) -> dict:
    return {
        "run": {"mlflow_run_id": "r", "seed": 0},
        "labelers": {"pairwise_agreement": 0.75},
        "reward_model": {"accuracy_vs_gold": 0.8, "by_family": {"add": 0.7}},
        "judge": {},
        "policies": {"ppo": {"gold_score": {"mean": ppo_gold, "ci95": [0.5, 0.7]}}},
        **extra,
    }


def test_leaves_name_each_value_by_its_path_and_keep_lists_whole():
    tree = {"a": {"b": 1, "c": [1, 2]}, "d": None}
    assert leaves(tree) == {"a/b": 1, "a/c": [1, 2], "d": None}


def test_the_same_figures_with_other_ids_and_times_do_not_differ():
    a = report(0.6)
    b = report(0.6, gate={"policy_version": "7"}) | {"run": {"mlflow_run_id": "other"}}
    assert figure_differences(a, b) == []


def test_a_last_bit_a_missing_field_and_a_new_field_each_differ():
    a, b = report(0.6), report(0.6 + 2**-52)
    b["reward_model"]["by_family"] = {"sort": 0.5}
    assert figure_differences(a, b) == [
        f"policies/ppo/gold_score/mean: 0.6 -> {0.6 + 2**-52}",
        "reward_model/by_family/add: 0.7 -> (absent)",
        "reward_model/by_family/sort: (absent) -> 0.5",
    ]


def test_compare_exact_exits_1_when_a_figure_differs(tmp_path, capsys):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps(report(0.6) | {"provenance": {}}))
    second.write_text(json.dumps(report(0.6) | {"provenance": {}}))
    assert main(["compare", "--exact", str(first), str(second)]) == 0
    second.write_text(json.dumps(report(0.61) | {"provenance": {}}))
    assert main(["compare", "--exact", str(first), str(second)]) == 1
    assert "1 figures differ" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("profile", "before", "after"),
    [("tiny", "4a76377", "65d0656"), ("smoke", "4a76377", "fcb1277")],
)
def test_the_committed_same_seed_pairs_have_identical_figures(profile, before, after):
    # README, "How much to trust a figure": the same seed and thread count before and after
    # a restructuring, every figure identical
    folder = Path(__file__).resolve().parents[2] / "bench" / "results" / "same-seed"
    a, b = (json.loads((folder / f"{profile}-seed0-{c}.json").read_text()) for c in (before, after))
    assert a["provenance"]["git_commit"].startswith(before)
    assert b["provenance"]["git_commit"].startswith(after)
    assert a["provenance"]["threads"] == b["provenance"]["threads"] == 1
    assert a["run"]["seed"] == b["run"]["seed"] == 0
    assert figure_differences(a, b) == []


def test_machine_measurements_are_shown_but_never_a_difference():
    # given two own-data reports alike but for the reward model's peak memory and a timing
    a, b = report(0.6), report(0.6)
    a["reward_model"] |= {"peak_memory_mb": 809.64, "seconds_per_epoch": 1.0}
    b["reward_model"] |= {"peak_memory_mb": 815.95, "seconds_per_epoch": 1.5}
    assert figure_differences(a, b) == []
    assert measurement_differences(a, b) == [
        "reward_model/peak_memory_mb: 809.64 -> 815.95",
        "reward_model/seconds_per_epoch: 1.0 -> 1.5",
    ]
    assert [is_measurement(p) for p in ("x/tokens_per_second", "x/throughput", "x/accuracy")] == [
        True,
        True,
        False,
    ]


def test_compare_exact_ignores_peak_memory_but_not_a_real_figure(tmp_path, capsys):
    def written(name: str, peak_memory_mb: float) -> tuple:
        made = report(0.6) | {"provenance": {}}
        made["reward_model"]["peak_memory_mb"] = peak_memory_mb
        (tmp_path / name).write_text(json.dumps(made))
        return tmp_path / name, made

    (first, _), (second, b) = written("a.json", 809.64), written("b.json", 815.95)
    # when only the memory reading differs: exit 0, the reading still shown
    assert main(["compare", "--exact", str(first), str(second)]) == 0
    out = capsys.readouterr().out
    assert "0 figures differ" in out
    assert "1 machine measurements differ (not compared)" in out
    assert "reward_model/peak_memory_mb: 809.64 -> 815.95" in out
    # when a real figure differs too: exit 1, naming that figure
    b["reward_model"]["accuracy_vs_gold"] = 0.81
    second.write_text(json.dumps(b))
    assert main(["compare", "--exact", str(first), str(second)]) == 1
    out = capsys.readouterr().out
    assert "1 figures differ" in out
    assert "reward_model/accuracy_vs_gold: 0.8 -> 0.81" in out


def test_compare_exact_says_a_differing_fewshot_shortfall_but_does_not_count_it(tmp_path, capsys):
    # given two reports with the same figures, base_fewshot shown 9 of 10 in the second
    # (with the same figures only the block's words or `asked` can differ: another count
    # shown is another prompt, whose figures differ and are counted)
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps(report(0.6) | {"provenance": {}}))
    block = {"shown": 9, "asked": 10, "reason": "only 9 families have one"}
    second.write_text(json.dumps(report(0.6) | {"provenance": {}, "fewshot_shortfall": block}))
    # when they are compared exactly: no figure differs (exit 0), and the shortfall is said
    assert main(["compare", "--exact", str(first), str(second)]) == 0
    out = capsys.readouterr().out
    assert "0 figures differ" in out
    assert "- B: base_fewshot shows 9 of evaluation.fewshot_examples = 10" in out
