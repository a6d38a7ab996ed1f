"""`instructflow compare`: two reports side by side, saying what makes a difference mean less."""

from instructflow.tasks import provenance
from instructflow.tasks.report_compare import report_comparison


def test_reports_made_from_other_data_or_settings_are_not_called_identical():
    # given two reports made on the same machine, software, threads, seed and commit
    prov = provenance.collect(seed=0)
    keys = {"sft": "sft-1", "ppo": "ppo-1", "evaluation": "evaluation-1"}
    run = {"profile": "smoke", "dvc_data_md5": "abc.dir", "stage_keys": keys}
    a = {"provenance": prov, "run": run, "policies": {}}
    assert "should be identical" in report_comparison(a, a)
    # when the second ran on a user's dataset with other PPO settings
    own = run | {"data_dir": "/data/mine", "stage_keys": keys | {"ppo": "ppo-2"}}
    text = report_comparison(a, {"provenance": prov, "run": own, "policies": {}})
    # then the comparison names what differs instead of promising identical figures
    assert "should be identical" not in text
    assert "- data_dir: None vs /data/mine" in text
    assert "- other settings or inputs (cache keys differ): ppo" in text


def test_a_policy_only_one_report_has_is_named_not_dropped():
    # given a report with PPO-ptx and FLAN beside one without them (a dataset with no mixture)
    gold = {"gold_score": {"mean": 0.5}}
    a = {"policies": {"sft": gold, "ppo_ptx": gold, "flan": gold}}
    b = {"policies": {"sft": gold, "t0": gold}}
    # when they are compared
    text = report_comparison(a, b)
    # then the shared policy is compared and the others are named
    assert "| sft | gold_score | 0.500 | 0.500 | +0.000 |" in text
    assert text.endswith("Only in A: ppo_ptx, flan\nOnly in B: t0")


def _dataset_report(judge_key: str, win: float, gate: dict | None = None) -> dict:
    win_rate = {"mean": win, "ci95": [win - 0.05, win + 0.05]}
    return {
        "run": {"profile": "smoke", "stage_keys": {"ppo": "ppo-1", "judge": judge_key}},
        "dataset": {"tables": {}},
        "policies": {"ppo": {"win_rate_vs_sft": win_rate, "kl_to_sft": 0.25}},
        "gate": gate,
    }


def test_win_rates_from_two_runs_own_judges_are_flagged_as_not_comparable():
    # given two dataset runs whose held-out judges were trained apart (other stage keys)
    a, b = _dataset_report("judge-1", 0.517), _dataset_report("judge-2", 0.694)
    # when they are compared
    text = report_comparison(a, b)
    # then the difference is shown with both CIs, and said to mix policy and judge
    assert (
        "| ppo | win_rate_vs_sft | 0.517 [0.467, 0.567] | 0.694 [0.644, 0.744] | +0.177 |" in text
    )
    assert "| ppo | kl_to_sft | 0.250 | 0.250 | +0.000 |" in text
    assert "- win_rate_vs_sft: NOT THE SAME JUDGE" in text
    # and the same judge (one key) is not flagged
    assert "NOT THE SAME JUDGE" not in report_comparison(a, _dataset_report("judge-1", 0.6))


def test_two_dataset_runs_on_other_data_say_which_tables_differ():
    # given two runs on a dataset outside DVC whose preferences differ by one row
    prov = {"provenance": provenance.collect(seed=0)}
    a, b = prov | _dataset_report("judge-1", 0.5), prov | _dataset_report("judge-2", 0.6)
    prefs = {"file": "preferences.jsonl", "rows": 300}
    a["dataset"]["tables"] = {"preferences": prefs | {"md5": "54e2a0862135a5cd"}}
    b["dataset"]["tables"] = {
        "preferences": prefs | {"md5": "1f4c4776aa11bb22"},
        "prompts": {"file": "prompts.jsonl", "rows": 300, "md5": "dcdbcab39a7a2d46"},
    }
    # then the comparison names each table that differs, and one only B has
    text = report_comparison(a, b)
    assert "- data preferences.jsonl: md5 54e2a086 vs md5 1f4c4776" in text
    assert "- data prompts.jsonl: none vs md5 dcdbcab3" in text
    # and the same tables are no difference
    assert "- data " not in report_comparison(a, a)
    # and a run let through on data its .dvc file does not record says so
    b["run"]["data_mismatch"] = True
    a["run"]["data_mismatch"] = False
    assert "- data_mismatch: False vs True" in report_comparison(a, b)


def test_an_embedded_world_report_beside_a_dataset_report_names_both_judges():
    world = {
        "run": {"profile": "smoke", "dvc_data_md5": "abc.dir", "stage_keys": {"judge": "judge-1"}},
        "policies": {"base": {"win_rate_vs_sft": {"mean": 0.5}}},
    }
    text = report_comparison(world, _dataset_report("judge-1", 0.6))
    assert (
        "- win_rate_vs_sft: NOT THE SAME JUDGE (A: the embedded world's held-out labelers; "
        "B: the run's held-out judge" in text
    )
    # two embedded-world runs on the same profile and data share their labelers
    assert "NOT THE SAME JUDGE" not in report_comparison(world, world)


def test_each_runs_gate_is_shown_side_by_side():
    passed = {
        "model_name": "m", "candidate": "ppo", "policy_version": "4", "incumbent": "champion v1",
        "evidence": "held-out judge", "win_rate": {"mean": 0.683, "ci95": [0.617, 0.75]},
        "promoted": True, "reason": "beats champion v1", "champion": "4",
    }  # fmt: skip
    failed = passed | {"policy_version": "5", "promoted": False, "reason": "CI low 0.34 <= 0.5"}
    failed |= {"champion": "4", "incumbent": "champion v4"}
    text = report_comparison(_dataset_report("j", 0.6, passed), _dataset_report("j", 0.5, failed))
    assert "| played | champion v1 | champion v4 |" in text
    assert "| win rate | 0.683 [0.617, 0.750] | 0.683 [0.617, 0.750] |" in text
    assert "| decision | promoted: beats champion v1 | not promoted: CI low 0.34 <= 0.5 |" in text
    assert "| version | 4 | 5 |" in text


def test_a_missing_or_foreign_file_is_named_in_one_line(tmp_path, capsys):
    from instructflow.flows.cli import main

    other = tmp_path / "params.json"
    other.write_text('{"ppo": {"lr": 3e-5}}')
    assert main(["compare", str(tmp_path / "gone.json"), str(other)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"instructflow compare: {tmp_path / 'gone.json'}: no such file",
        f"instructflow compare: {other}: not a report.json (it has no 'policies')",
    ]


def test_the_comparison_names_the_settings_that_differ():
    # given two runs of one profile, the second with another PPO learning rate
    prov = provenance.collect(seed=0)
    run = {"profile": "smoke", "stage_keys": {"ppo": "ppo-1"}, "settings": {"ppo.epochs": 2}}
    other = run | {
        "stage_keys": {"ppo": "ppo-2"},
        "settings": {"ppo.epochs": 2, "ppo.lr": 0.0003},
    }
    text = report_comparison(
        {"provenance": prov, "run": run, "policies": {}},
        {"provenance": prov, "run": other, "policies": {}},
    )
    # then it says which setting, with both values (the default where a run left it)
    assert "- setting ppo.lr: default vs 0.0003" in text
    assert "ppo.epochs" not in text


def test_judges_that_differ_because_their_sft_models_do_say_so():
    # given two dataset runs alike but for a setting only SFT saw (--processes 2: SFT's
    # floats round otherwise), so the judge, fine-tuned from each run's SFT, has another key
    a, b = _dataset_report("judge-950a", 0.562), _dataset_report("judge-cbb3", 0.562)
    a["run"]["stage_keys"]["sft"], b["run"]["stage_keys"]["sft"] = "sft-0e5e", "sft-683d"
    # when they are compared
    text = report_comparison(a, b)
    # then the judge line says which keys differ and that the SFT models are why
    assert (
        "mixes a change of policy with a change of judge (judge keys judge-950a vs judge-cbb3);"
        " each run's judge is fine-tuned from that run's SFT model, and the SFT models differ"
        " (sft-0e5e vs sft-683d)" in text
    )
    # and judges that differ with the same SFT name their keys only
    b["run"]["stage_keys"]["sft"] = "sft-0e5e"
    assert "(judge keys judge-950a vs judge-cbb3)\n" in report_comparison(a, b) + "\n"
    assert "fine-tuned from" not in report_comparison(a, b)


def _fewshot_report(shortfall: dict | None) -> dict:
    row = {"gold_score": {"mean": 0.4}}
    report = {"policies": {"base_fewshot": row, "sft": row}}
    return report | ({"fewshot_shortfall": shortfall} if shortfall else {})


def test_a_base_fewshot_shown_fewer_demonstrations_is_said_and_not_called_like_for_like():
    # given a world run whose base_fewshot showed 9 of the 10 demonstrations asked for, beside
    # one that showed all it was asked for
    reason = "it shows one per task family ..., and only 9 families have one"
    a = _fewshot_report({"shown": 9, "asked": 10, "reason": reason})
    b = _fewshot_report(None)
    # when they are compared
    text = report_comparison(a, b)
    # then A's shortfall is said in one line, and base_fewshot's rows are not like for like
    said = "base_fewshot shows 9 of evaluation.fewshot_examples = 10 demonstrations"
    assert f"- A: {said}: {reason}" in text
    assert "- B: " not in text
    assert (
        "- base_fewshot: NOT LIKE FOR LIKE (demonstrations shown: A 9 of 10; B all it was"
        " asked for), so its rows' B - A mixes a change of policy with a change of prompt"
    ) in text
    # above the table, whose rows are still shown
    assert text.index("NOT LIKE FOR LIKE") < text.index("| base_fewshot | gold_score |")
    # and two runs short by the same count are like for like, each still said
    same = report_comparison(a, _fewshot_report({"shown": 9, "asked": 10, "reason": reason}))
    assert f"- A: {said}" in same and f"- B: {said}" in same
    assert "NOT LIKE FOR LIKE" not in same
    # and neither short says nothing of it
    assert "base_fewshot shows" not in report_comparison(b, b)
    # and a base_fewshot in one report only has no rows to call unlike (Only in B names it)
    del a["policies"]["base_fewshot"]
    assert "NOT LIKE FOR LIKE" not in report_comparison(a, b)
