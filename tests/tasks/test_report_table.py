"""The `rlhf-policies` table artifact: a few columns a 1400 px window shows whole, each
figure with its 95% CI, and a description saying where the other measures are."""

from instructflow.tasks.report import empty_report
from instructflow.tasks.report_table import COLUMNS, table_description, table_rows

WIN, JUDGE, GOLD = (
    COLUMNS["win_rate_vs_sft"],
    COLUMNS["judge_win_rate_vs_sft"],
    COLUMNS["gold_score"],
)


def _embedded_report() -> dict:
    """An embedded world's evaluation, by hand: figures with CIs, and the other measures."""
    report = empty_report({"mlflow_run_id": "r123", "profile": "smoke"})
    others = {"likert": {"mean": 3.25}, "rm_score": {"mean": 0.4}, "kl_to_sft": 1.5,
              "response_length": 7.0, "public_suite_accuracy": 0.3, "pretrain_perplexity": 210.0,
              "per_family": {"add": {"gold_score": 0.5}}}  # fmt: skip
    report["policies"] = {
        "ppo": {
            "gold_score": {"mean": 0.71249, "ci95": [0.6, 0.8125]},
            "win_rate_vs_sft": {"mean": 0.62, "ci95": [0.5104, 0.73]},
            "judge_win_rate_vs_sft": {"mean": 0.5, "ci95": [0.4, 0.6]},
            **others,
        },
        "sft": {
            "gold_score": {"mean": 0.45, "ci95": [0.3, 0.6]},
            "win_rate_vs_sft": {"mean": 0.5, "ci95": [0.375, 0.625]},
            "judge_win_rate_vs_sft": {"mean": 0.4791666, "ci95": [0.35, 0.6]},
            **others,
        },
    }
    report["judge"] = {"trustworthy": True}
    return report


def test_a_row_is_the_policy_and_its_preference_figures_with_their_cis():
    # given an embedded world's evaluation
    rows = table_rows(_embedded_report())
    # then each policy has its win rate, the judge's and its gold score, mean [95% CI] at
    # 3 decimals as report.md shows them, in the pipeline's order (sft before ppo)
    assert rows == [
        {
            "policy": "sft",
            WIN: "0.500 [0.375, 0.625]",
            JUDGE: "0.479 [0.350, 0.600]",
            GOLD: "0.450 [0.300, 0.600]",
        },
        {
            "policy": "ppo",
            WIN: "0.620 [0.510, 0.730]",
            JUDGE: "0.500 [0.400, 0.600]",
            GOLD: "0.712 [0.600, 0.812]",
        },
    ]


def test_the_headers_are_few_and_say_scale_and_ci():
    # given the table's columns
    headers = list(table_rows(_embedded_report())[0])
    # then there are four, none a raw report.json key, each figure's header with its scale
    assert len(headers) == 4
    assert not {"likert", "rm_score", "kl_to_sft", "win_rate_vs_sft"} & set(headers)
    for header in headers[1:]:
        assert header.endswith("(0-1) [95% CI]"), header
        assert len(header) <= 40, header  # narrow enough for Prefect's artifact page


def test_a_column_no_policy_has_is_left_out_and_a_missing_figure_is_a_dash():
    # given a dataset run: no gold, no labelers, one policy without a judged win rate
    report = _embedded_report()
    report["dataset"] = {"name": "mine"}
    for row in report["policies"].values():
        row["gold_score"] = None
        del row["judge_win_rate_vs_sft"]
    report["policies"]["ppo"]["win_rate_vs_sft"] = None
    # when its table is built
    rows = table_rows(report)
    # then it has the win rate column only, a dash where there is no figure
    assert rows == [
        {"policy": "sft", WIN: "0.500 [0.375, 0.625]"},
        {"policy": "ppo", WIN: "-"},
    ]


def test_the_description_says_who_judged_and_where_the_other_measures_are():
    # given an embedded world's report
    text = table_description(_embedded_report())
    # then it says the figures are means with 95% CIs, judged by held-out labelers
    assert "mean [95% CI over prompts]" in text
    assert "held-out labelers' verdicts" in text
    # and where every other measure is: report.json, the report artifact and MLflow
    assert "`reports/r123/report.json` (`policies`)" in text
    assert "`rlhf-report` artifact" in text
    assert "`eval/<policy>/<measure>`" in text
    assert "not to be trusted" not in text


def test_the_description_of_a_dataset_run_names_the_judge_and_its_distrust():
    # given a dataset run whose held-out judge is not to be trusted
    report = _embedded_report()
    report["dataset"] = {"name": "mine"}
    report["judge"] = {"trustworthy": False, "trust_reason": "too weak"}
    # then the description says the win rates are the judge's, and where to read why not
    text = table_description(report)
    assert "the held-out judge's verdicts" in text and "labelers" not in text
    assert "not to be trusted here: report.json `judge.trust_reason`" in text


def test_the_description_names_whom_the_test_split_holds():
    # given a dataset run split by user, and one without user ids (split by prompt)
    by_user, by_prompt = _embedded_report(), _embedded_report()
    by_user["dataset"] = {"name": "mine", "split_rule": "user_id"}
    by_prompt["dataset"] = {"name": "mine", "split_rule": "prompt_hash"}
    # then the first's figures are on test users, the second's on test prompts (as report.md
    # and the model card say): no user of its was held out
    assert table_description(by_user).startswith("Policies on test users,")
    assert table_description(by_prompt).startswith("Policies on test prompts,")
    assert "test users" not in table_description(by_prompt)


def test_the_description_says_base_fewshot_was_shown_fewer_demonstrations_than_asked():
    # given a report whose base_fewshot showed 9 of the 10 demonstrations asked for
    report = _embedded_report()
    reason = "it shows one per task family ..., and only 9 families have one"
    report["fewshot_shortfall"] = {"shown": 9, "asked": 10, "reason": reason}
    # then the description says so in report.md's sentence, before where the rest is
    text = table_description(report)
    said = f"base_fewshot shows 9 of evaluation.fewshot_examples = 10 demonstrations: {reason}."
    assert said in text.split("\n\n")
    assert text.index(said) < text.index("Every other measure")
    # and a report without the block says nothing of it
    assert "base_fewshot" not in table_description(_embedded_report())
