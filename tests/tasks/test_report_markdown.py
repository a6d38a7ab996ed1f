"""report.md reads top down: the gate's decision, the figures, then how the run was made."""

from instructflow.tasks.report import empty_report, to_markdown


def _report() -> dict:
    report = empty_report(
        {
            "mlflow_run_id": "abc",
            "profile": "smoke",
            "stage_seconds": {"sft": 5.104, "registry": 1.9},
            "stage_keys": {"sft": "sft-1f", "evaluation": "evaluation-2e"},
        }
    )
    report["status"] = "completed"
    report["policies"] = {"sft": {"win_rate_vs_sft": {"mean": 0.5, "ci95": [0.4, 0.6]}}}
    report["provenance"] = {"threads": 2}
    report["gate"] = {
        "model_name": "instructflow-policy-smoke", "policy_version": "2", "candidate": "ppo_ptx",
        "incumbent": "sft", "evidence": "held-out labelers", "prompts": 60,
        "win_rate": {"mean": 0.456, "ci95": [0.383, 0.533]}, "promoted": False,
        "reason": "CI lower end 0.383 <= 0.5", "champion": None,
    }  # fmt: skip
    return report


def test_the_decision_comes_first_and_the_run_block_last():
    text = to_markdown(_report())
    order = ["Status: **completed**", "## Promotion gate", "## Policies", "## Run", "## Where it"]
    assert [text.index(heading) for heading in order] == sorted(
        text.index(heading) for heading in order
    )
    assert "- instructflow-policy-smoke v2 (ppo_ptx): **not promoted**" in text
    # the gate's figure is told apart from the policy table's for the same pair
    assert (
        "- win rate: 0.456 [0.383, 0.533] (the gate's own head-to-head, both sampled afresh)"
        in text
    )


def test_stage_seconds_and_keys_are_one_table_not_a_dict():
    text = to_markdown(_report())
    assert "| sft | 5.1 | `sft-1f` |" in text
    assert "| registry | 1.9 | - |" in text and "| evaluation | - | `evaluation-2e` |" in text
    assert "{'sft'" not in text


def test_a_stage_served_from_the_cache_is_marked_so_in_the_stage_table():
    # given a re-run whose SFT came from Prefect's cache while its evaluation ran
    report = _report()
    report["run"]["stage_seconds"] = {"sft": 0.31, "evaluation": 40.2}
    report["run"]["cached_stages"] = ["sft"]
    text = to_markdown(report)
    # then SFT's seconds say they are the cache's, the evaluation's are not marked
    assert "| sft | 0.3 (cached) | `sft-1f` |" in text
    assert "| evaluation | 40.2 | `evaluation-2e` |" in text
    # and the list is the table's column, not a row of the field table
    assert "| cached_stages |" not in text


def test_a_report_from_before_cached_stages_marks_no_stage():
    text = to_markdown(_report())  # no run.cached_stages
    assert "(cached)" not in text and "| sft | 5.1 | `sft-1f` |" in text


def test_the_run_summary_has_the_decision_and_the_candidates_figures():
    from instructflow.tasks.report import run_summary

    report = _report()
    report["policies"]["ppo_ptx"] = {
        "win_rate_vs_sft": {"mean": 0.472, "ci95": [0.406, 0.539]},
        "kl_to_sft": 0.25,
        "gold_score": None,
    }
    text = run_summary(report)
    assert text.startswith("Status: **completed**\n\n## Promotion gate\n")
    assert "- instructflow-policy-smoke v2 (ppo_ptx): **not promoted**" in text
    assert (
        "Candidate ppo_ptx on test users: win_rate_vs_sft 0.472 [0.406, 0.539]; kl_to_sft 0.250"
        in text
    )
    # and a dataset without user ids (split by prompt) held prompts out, not users
    report["dataset"] = {"split_rule": "prompt_hash"}
    assert "Candidate ppo_ptx on test prompts: " in run_summary(report)
    report["dataset"] = {"split_rule": "user_id"}
    assert "Candidate ppo_ptx on test users: " in run_summary(report)


def test_the_base_model_stage_row_has_its_key_not_one_row_per_policy_it_made():
    # given a run whose stage_keys are by policy: base and base_fewshot are base_model's output
    report = _report()
    report["run"]["stage_seconds"] = {"base_model": 0.14, "sft": 5.104}
    report["run"]["stage_keys"] = {
        "base": "base_model-84",
        "base_fewshot": "base_model-84",
        "sft": "sft-1f",
    }
    text = to_markdown(report)
    # then the base_model row shows the key, and no row without seconds repeats it
    assert "| base_model | 0.1 | `base_model-84` |" in text
    assert "| base |" not in text and "| base_fewshot |" not in text
    assert "| sft | 5.1 | `sft-1f` |" in text
    # and report.json's stage_keys stay by policy (sweeps and `evaluate` read them so)
    assert report["run"]["stage_keys"]["base"] == "base_model-84"


def test_the_run_summary_and_report_md_link_the_prefect_flow_run(monkeypatch):
    # given a run that knows its Prefect flow run, and the UI `make serve` shows it on
    from instructflow.tasks import env
    from instructflow.tasks.report import run_summary

    monkeypatch.setattr(env, "prefect_ui_url", lambda: "http://127.0.0.1:4272")
    report = _report()
    report["run"]["prefect_flow_run_id"] = "90f8ab54"
    link = "Prefect flow run (logs, task runs): [90f8ab54](http://127.0.0.1:4272/runs/flow-run/90f8ab54)"
    # then the MLflow parent run's Overview links it (its logs are there, not in MLflow)
    assert link in run_summary(report).splitlines()
    # and so does report.md, under the MLflow run's link
    text = to_markdown(report, mlflow_url="http://127.0.0.1:5072/#/experiments/1/runs/abc")
    assert text.index("MLflow run: ") < text.index(link)


def test_a_report_without_a_flow_run_links_none():
    from instructflow.tasks.report import run_summary

    assert "Prefect flow run" not in run_summary(_report()) + to_markdown(_report())


def test_report_md_says_which_settings_the_run_set():
    # given a run that set two PPO settings away from its profile's defaults
    report = _report()
    report["run"]["settings"] = {"ppo.lr": 0.0003, "ppo.min_gain": -1}
    text = to_markdown(report)
    # then its Run section lists them, and not as a Python dict in the fields' table
    assert "| setting you set | value |\n| --- | --- |\n| ppo.lr | `0.0003` |" in text
    assert "| ppo.min_gain | `-1` |" in text
    assert "{'ppo.lr'" not in text
    # and a run at its profile's defaults says so
    report["run"]["settings"] = {}
    assert "Settings: the smoke profile's defaults (none set)." in to_markdown(report)


def test_a_persons_answer_and_peoples_rankings_show_in_the_gate_block():
    # given a gate that passed and a person rejected (report.md said only "not promoted",
    # reason "beats sft"), then people's rankings decided again
    report = _report()
    report["gate"] |= {
        "reason": "beats sft: win rate 0.783 (95% CI 0.722-0.842)",
        "approval": {"decision": "rejected", "reviewer": "ana", "reason": "not convinced"},
    }
    text = to_markdown(report)
    assert "- approval: rejected by ana: not convinced" in text
    report["gate"] |= {"evidence": "human", "automatic": {"reason": "beats sft: 0.783"}}
    text = to_markdown(report)
    assert "- win rate: 0.456 [0.383, 0.533] (people's rankings)" in text
    assert "- before people's rankings: beats sft: 0.783" in text


def test_a_candidate_that_says_almost_nothing_is_flagged_and_its_length_shown():
    # given a PPO policy answering in under a third of SFT's words (a tester's: 0.95 vs 8.71)
    report = _report()
    report["gate"]["candidate"] = "ppo"
    report["policies"] = {
        "sft": {"win_rate_vs_sft": {"mean": 0.5, "ci95": [0.4, 0.6]}, "response_length": 8.71},
        "ppo": {"win_rate_vs_sft": {"mean": 0.78, "ci95": [0.72, 0.84]}, "response_length": 0.95},
    }
    text = to_markdown(report)
    assert "> **Warning:** ppo's answers average 0.95 words, SFT's 8.71" in text
    assert "| response_length |" in text.split("## Policies")[1].splitlines()[2]
    # and a third of SFT's length or more is no warning (the tiny demo's PPO: 2.58 vs 4.27)
    report["policies"]["ppo"]["response_length"] = 2.58
    report["policies"]["sft"]["response_length"] = 4.27
    assert "Warning" not in to_markdown(report)


def test_every_training_stage_shows_its_trainable_fraction_and_peak_memory():
    from instructflow.tasks.report_training import training_block

    # given the metrics each training stage's result records (the RM's under rm/): its own
    # peak (above what its process held at its start) and its process's whole peak
    sft = {"sft/best_valid_loss": 1.5, "sft/trainable_fraction": 0.01, "sft/peak_memory_mb": 812.0}
    sft["sft/process_peak_memory_mb"] = 1500.0
    rm = {"rm/valid_accuracy": 0.7, "rm/trainable_fraction": 0.02, "rm/peak_memory_mb": 905.5}
    rm["rm/process_peak_memory_mb"] = 1610.5
    ppo = {"ppo/chosen_kl": 0.3, "ppo/trainable_fraction": 0.03, "ppo/peak_memory_mb": 1204.25}
    older = {"flan/best_valid_loss": 2.0}  # a cached result of a version that recorded none
    # and one of a version that recorded the stage's own peak only
    t0 = {"t0/trainable_fraction": 1.0, "t0/peak_memory_mb": 300.0}
    # when the report's training block is made from them
    block = training_block({"sft": sft, "flan": older, "t0": t0, "reward_model": rm, "ppo": ppo})
    # then each stage that recorded them has its readings under its stage name, none other
    assert block == {
        "sft": {
            "trainable_fraction": 0.01,
            "peak_memory_mb": 812.0,
            "process_peak_memory_mb": 1500.0,
        },
        "t0": {"trainable_fraction": 1.0, "peak_memory_mb": 300.0},
        "reward_model": {
            "trainable_fraction": 0.02,
            "peak_memory_mb": 905.5,
            "process_peak_memory_mb": 1610.5,
        },
        "ppo": {"trainable_fraction": 0.03, "peak_memory_mb": 1204.25},
    }
    # and report.md shows them in one table, a row per stage, the RM's readings once, its
    # headers saying which peak is the stage's own and which its whole process's
    report = _report()
    report["reward_model"] = {"accuracy_heldout_labels": 0.6, "trainable_fraction": 0.02}
    report["reward_model"]["process_peak_memory_mb"] = 1610.5
    report["training"] = block
    text = to_markdown(report)
    header = next(line for line in text.splitlines() if line.startswith("| stage |"))
    assert header == (
        "| stage | trainable_fraction | peak_memory_mb (stage's own, above its process at start)"
        " | process_peak_memory_mb (whole process) |"
    )
    assert "| sft | 0.010 | 812.000 | 1500.000 |" in text
    assert "| ppo | 0.030 | 1204.250 | - |" in text and "| t0 | 1.000 | 300.000 | - |" in text
    assert "| reward_model | 0.020 | 905.500 | 1610.500 |" in text
    assert text.count("0.020") == 1 and text.count("1610.500") == 1
    assert "- accuracy_heldout_labels: 0.600" in text
    assert text.index("## Training") < text.index("## Run")
    # and a report of an older version, without the block, has no empty table
    assert "## Training" not in to_markdown(_report())


def _judged_dataset_report(accuracy: float, pairs: int) -> dict:
    """A dataset run's report whose judge scored `accuracy` on `pairs` held-out pairs, gated
    as a dataset run's gate gates (tasks.gate.judge_decision)."""
    from instructflow.tasks.gate import judge_decision
    from instructflow.tasks.gate_config import GateConfig
    from instructflow.tasks.judge_trust import report_block

    metrics = {
        "judge/training_rows": 30.0,
        "judge/training_pairs": 30.0,
        "judge/test_pairs": float(pairs),
        "judge/accuracy_heldout_pairs": accuracy,
    }
    win = {"mean": 0.6, "ci95": [0.45, 0.75]}
    decision = judge_decision(win, accuracy, pairs, GateConfig())
    report = _report()
    report["policies"] = {"ppo": {"win_rate_vs_sft": win}}
    report["judge"] = report_block(metrics, None, floor=GateConfig().judge_accuracy_floor)
    report["gate"] |= {"evidence": "held-out judge", "reason": decision.reason}
    report["dataset"] = {"split_rule": "user_id"}
    return report


def _whole_report_md(report: dict) -> str:
    """report.md of a dataset run: the report's sections, then the Dataset section."""
    from instructflow.tasks.dataset_report import dataset_markdown

    result = report | {"skipped": {}}
    result["dataset"] = {
        "dir": "/d", "tables": {}, "preference_shape": "pairwise", "k_counts": {2: 30},
        "split_rule": "user_id", "split_counts": {}, "sft_source": "demonstrations",
        "rendering": "text",
    }  # fmt: skip
    return to_markdown(report) + dataset_markdown(result)


def test_an_untrusted_judges_reason_is_said_once_in_the_gates_reason_that_quotes_it():
    import copy

    # given a dataset run whose judge is too weak, so that its gate quotes why
    report = _judged_dataset_report(accuracy=0.45, pairs=12)
    reason = report["judge"]["trust_reason"]
    assert not report["judge"]["trustworthy"] and reason in report["gate"]["reason"]
    before = copy.deepcopy(report)
    # when report.md is written
    text = _whole_report_md(report)
    # then the reason is said once, in the gate's reason, where a reader meets it first
    assert text.count(reason) == 1
    assert f"- reason: no automatic promotion: {reason}\n" in text
    # and the later places say the verdict and point there
    assert "which is not to be trusted here (the Promotion gate's reason above says why;" in text
    assert "- trust_reason: see the Promotion gate's reason above\n" in text
    assert "on held-out pairs (not to be trusted: see the Promotion gate's reason above)" in text
    # and report.json's content is as it was
    assert report == before


def test_a_judges_reason_is_said_once_where_no_gate_quotes_it():
    # given an untrusted judge on the embedded world (its gate is the labelers': no quote)
    report = _judged_dataset_report(accuracy=0.45, pairs=12)
    world = report | {"dataset": None, "gate": _report()["gate"]}
    reason = world["judge"]["trust_reason"]
    text = to_markdown(world)
    # then the note above the policy table says it, and the judge section points there
    assert text.count(reason) == 1
    assert f"which is not to be trusted here: {reason} (trained on 30 pairs);" in text
    assert "- trust_reason: see the note above the policy table\n" in text
    # and a trusted judge's reason is said once, in the Held-out judge section
    trusted = _judged_dataset_report(accuracy=0.9, pairs=400)
    reason = trusted["judge"]["trust_reason"]
    assert trusted["judge"]["trustworthy"] and reason not in trusted["gate"]["reason"]
    text = _whole_report_md(trusted)
    assert text.count(reason) == 1 and f"- trust_reason: {reason}\n" in text
    assert "on held-out pairs (trusted: see Held-out judge, trust_reason)" in text


def test_a_dataset_runs_gate_reason_is_said_once_and_the_dataset_section_points_to_it():
    # given a dataset run whose trusted judge's win rate does not clear the bar
    for accuracy, pairs in ((0.9, 400), (0.45, 12)):  # and one whose judge is not trusted
        report = _judged_dataset_report(accuracy, pairs)
        reason = report["gate"]["reason"]
        # when report.md is written with its Dataset section
        text = _whole_report_md(report)
        # then the gate's reason is said once, in the Promotion gate section
        assert text.count(reason) == 1 and f"- reason: {reason}\n" in text
        # and the Dataset section's gate line says the verdict and points there
        dataset = text[text.index("## Dataset") :]
        assert (
            "- gate (held-out judge): not promoted (see the Promotion gate's reason above)\n"
            in (dataset)
        )


def test_the_policy_tables_say_what_each_column_measures_and_in_which_unit():
    # given a report whose policies have some of the measures (a dataset run: no gold)
    report = _report()
    report["policies"]["sft"] |= {"likert": {"mean": 4.0}, "kl_to_sft": 0.0}
    # when report.md is written, as MLflow's one table or the Prefect artifact's narrow ones
    for narrow in (False, True):
        text = to_markdown(report, narrow=narrow)
        (columns,) = [line for line in text.splitlines() if line.startswith("Columns: ")]
        # then under the tables one line says, for each column shown, its unit or scale
        assert "`likert`: held-out labelers, 1-7" in columns
        assert "`kl_to_sft`: nats per response" in columns
        assert "`win_rate_vs_sft`: " in columns
        # and only for the columns shown: no gold here, so no gold_score
        assert "gold_score" not in columns
        assert text.index("| sft |") < text.index("Columns: ") < text.index("## Run")


def test_report_md_orders_the_preference_columns_as_the_prefect_table_does():
    from instructflow.tasks.report_table import COLUMNS

    # given a policy with every preference figure
    report = _report()
    figure = {"mean": 0.5, "ci95": [0.4, 0.6]}
    report["policies"]["sft"] |= dict.fromkeys(COLUMNS, figure)
    # when report.md is written
    header = next(line for line in to_markdown(report).splitlines() if line.startswith("| policy"))
    # then its columns come in the Prefect table's order: the held-out labelers' win rate
    # first (what results count on), then the judge's, then gold (gold led report.md alone)
    positions = [header.index(f" {name} ") for name in COLUMNS]
    assert positions == sorted(positions), header


def test_base_fewshot_showing_fewer_demonstrations_than_asked_is_said_under_the_table():
    # given a run whose base_fewshot showed 1 of the 3 demonstrations asked for
    report = _report()
    report["policies"]["base_fewshot"] = {"win_rate_vs_sft": {"mean": 0.2, "ci95": [0.1, 0.3]}}
    reason = "the training split holds only 1 prompt with a demonstration"
    report["fewshot_shortfall"] = {"shown": 1, "asked": 3, "reason": reason}
    text = to_markdown(report)
    # then one line under the policy table says so, with why, before the next section
    line = (
        "Note: base_fewshot shows 1 of evaluation.fewshot_examples = 3 demonstrations: the"
        " training split holds only 1 prompt with a demonstration."
    )
    assert text.count(line) == 1
    assert text.index("| base_fewshot |") < text.index(line) < text.index("## Run")
    # and a run that showed all it asked for has no such line
    del report["fewshot_shortfall"]
    assert "evaluation.fewshot_examples" not in to_markdown(report)
