"""The held-out judge: which preferences it learns from, how its accuracy and agreement are counted,
when it is too weak to trust, and that it learns a preference the training RM never saw."""

import json
import math
from pathlib import Path

import pytest
import torch

from instructflow.models.reward_model import reward_model_from_causal_lm
from instructflow.tasks import comparisons
from instructflow.tasks.judge import (
    HeldOutJudge,
    JudgeConfig,
    JudgeDataError,
    cap_pairs,
    judge_accuracy,
    pair_count,
    select_judge_rows,
    split_for_judge,
    train_judge_on_comparisons,
)
from instructflow.tasks.judge_trust import (
    agreement_block,
    gold_agreement,
    judge_is_trustworthy,
    pairs_to_beat_chance,
    report_block,
    untrusted_caption,
    wilson_lower,
    wilson_upper,
)
from instructflow.tasks.reward_model import _forward, score_rows
from instructflow.tasks.splits import split_by_user
from instructflow.tasks.tables import read_jsonl, write_jsonl
from instructflow.world import layout


def row(cid: str, user: str, labeler: str, prompt: str, responses: list[str], ranking: list[int]):
    return {
        "comparison_id": cid,
        "prompt_id": cid,
        "user_id": user,
        "split": "test",
        "prompt": prompt,
        "responses": responses,
        "ranking": ranking,
        "labeler_id": labeler,
    }


RM_ROWS = [
    row(f"rm{i}", f"u{i % 3}", "L0", f"p{i}", ["a", "b", "c", "d"], [0, 1, 2, 3]) for i in range(4)
]
HELDOUT = [
    row(f"h{i}", f"t{i % 5}", "H0", f"q{i}", ["a", "b", "c", "d"], [3, 2, 1, 0]) for i in range(10)
]


# --- training data selection ----------------------------------------------------


def test_held_out_rows_disjoint_from_the_rm_data_are_taken_as_they_are():
    assert select_judge_rows(HELDOUT, RM_ROWS) == HELDOUT


@pytest.mark.parametrize(
    ("field", "value"),
    [("comparison_id", "rm1"), ("user_id", "u2"), ("labeler_id", "L0")],
)
def test_rows_the_training_rm_saw_are_refused(field, value):
    # given one held-out row that shares a comparison, a user or a labeler with the RM's data
    leaked = [*HELDOUT[:3], HELDOUT[3] | {field: value}]
    # then the judge refuses to train, naming what overlaps
    with pytest.raises(JudgeDataError, match=f"{field}='{value}'"):
        select_judge_rows(leaked, RM_ROWS)


def test_shared_labelers_are_allowed_on_a_test_split_ranked_by_the_same_people():
    same_people = [r | {"labeler_id": "L0"} for r in HELDOUT]
    assert select_judge_rows(same_people, RM_ROWS, distinct_labelers=False) == same_people


def test_the_split_keeps_each_user_on_one_side():
    train, test = split_for_judge(HELDOUT, test_share=0.3, seed=0)
    train_users, test_users = {r["user_id"] for r in train}, {r["user_id"] for r in test}
    # 5 users: ceil(0.3 * 5) = 2 test the judge, 3 train it, none on both sides
    assert len(test_users) == 2 and len(train_users) == 3
    assert not train_users & test_users
    assert sorted(r["comparison_id"] for r in train + test) == sorted(
        r["comparison_id"] for r in HELDOUT
    )
    # deterministic for a seed
    assert split_for_judge(HELDOUT, 0.3, 0) == (train, test)


def test_without_users_the_split_is_by_prompt_and_one_group_leaves_no_test_part():
    no_users = [{k: v for k, v in r.items() if k != "user_id"} for r in HELDOUT]
    train, test = split_for_judge(no_users + [no_users[0] | {"comparison_id": "again"}], 0.3, 0)
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
    assert len({r["prompt"] for r in test}) == 3  # ceil(0.3 * 10 prompts)
    assert not split_by_user(no_users) and split_by_user(HELDOUT)  # what its log line says
    # one user only: the prompts are the groups; one prompt only: nothing left to test on
    assert split_for_judge(HELDOUT[:1], 0.3, 0) == (HELDOUT[:1], [])


def test_cap_pairs_takes_whole_rankings_then_single_pairs_up_to_exactly_the_cap():
    # given rankings of K=4 (6 pairs each) and a cap of 20 pairs
    capped = cap_pairs(HELDOUT, 20)
    # then 3 whole rankings (18 pairs) and 2 pairs of the 4th: its best over its 2nd and 3rd
    assert [r["comparison_id"] for r in capped[:3]] == ["h0", "h1", "h2"]
    assert pair_count(capped) == 20
    assert [(r["responses"], r["ranking"]) for r in capped[3:]] == [
        (["d", "c"], [0, 1]),
        (["d", "b"], [0, 1]),
    ]
    assert cap_pairs(HELDOUT, None) == HELDOUT


# --- accuracy, agreement and the weak-judge rule (worked by hand) ----------------


def test_accuracy_counts_every_ranked_pair_and_a_tie_as_half():
    rows = [
        {"ranking": [0, 2, 1]},  # pairs 0>2, 0>1, 2>1 with scores 3>2, 3>1, 2>1: 3 right
        {"ranking": [0, 1, 2]},  # 1<2, 1<3, 2<3: all 3 wrong
        {"ranking": [1, 0]},  # K=2 (padded): 5 == 5, a tie: 0.5
    ]
    scores = torch.tensor([[3.0, 1.0, 2.0], [1.0, 2.0, 3.0], [5.0, 5.0, 0.0]])
    assert judge_accuracy(scores, rows) == pytest.approx(3.5 / 7)
    assert math.isnan(judge_accuracy(torch.empty(0, 0), []))


def test_accuracy_is_the_exact_share_of_pairs_not_a_float32_mean():
    # given 15 held-out pairs the judge's float32 scores order right 7 times
    rows = [{"ranking": [0, 1]}] * 15
    scores = torch.tensor([[1.0, 0.0]] * 7 + [[0.0, 1.0]] * 8, dtype=torch.float32)
    # then its accuracy is 7/15 as a float64 (the report, the gate and MLflow show it), not
    # the float32 mean's 0.46666666865348816
    accuracy = judge_accuracy(scores, rows)
    assert accuracy == 7 / 15 and repr(accuracy) == "0.4666666666666667"


def test_gold_agreement_counts_only_pairs_gold_orders():
    verdicts = [1.0, 0.0, 0.5, 1.0, 1.0]
    gold_first = [0.9, 0.2, 0.5, 0.3, 0.4]
    gold_second = [0.1, 0.8, 0.1, 0.3, 0.9]
    # agree, agree, half (judge tie), skipped (gold tie), disagree: 2.5 of 4
    assert gold_agreement(verdicts, gold_first, gold_second) == (pytest.approx(0.625), 4)
    assert math.isnan(gold_agreement([1.0], [0.2], [0.2])[0])


def test_agreement_block_pools_policies_and_reads_unseen_prompts_apart():
    def item(prompt, gold, ref, labeler, judge):
        return {
            "prompt": prompt,
            "gold": gold,
            "reference_gold": ref,
            "labeler_verdict": labeler,
            "judge_verdict": judge,
        }

    raw = {
        "ppo": [item("seen", 1.0, 0.0, 1.0, 1.0), item("new", 1.0, 0.0, 1.0, 0.0)],
        "sft": [item("new", 0.0, 1.0, 0.0, 0.0), item("new", 0.5, 0.5, 1.0, 1.0)],
    }
    block = agreement_block(raw, frozenset({"seen"}))
    # gold orders 3 pairs: the labelers agree on 3, the judge on 2
    assert (block["judge"], block["heldout_labelers"], block["pairs"]) == (
        pytest.approx(2 / 3),
        1.0,
        3,
    )
    assert block["unseen_prompts"] == {"judge": 0.5, "heldout_labelers": 1.0, "pairs": 2}
    assert block["by_policy"]["sft"] == {"judge": 1.0, "heldout_labelers": 1.0, "pairs": 1}


def test_a_weak_judge_is_not_trusted_and_says_why_in_one_line():
    ok, reason = judge_is_trustworthy(0.55, 400)
    assert not ok and "0.550" in reason and "0.60" in reason and "\n" not in reason
    assert judge_is_trustworthy(0.6, 400)[0]
    assert not judge_is_trustworthy(0.7, 400, floor=0.75)[0]
    assert not judge_is_trustworthy(float("nan"), 400)[0]
    assert not judge_is_trustworthy(0.9, 0)[0]


def test_wilson_lower_end_by_hand():
    # p = 5/8, z = 1.96: centre (0.625 + 3.8416/16) / (1 + 3.8416/8) = 0.58445,
    # half-width 1.96 * sqrt(0.625 * 0.375 / 8 + 3.8416 / 256) / 1.4802 = 0.27871
    assert wilson_lower(0.625, 8) == pytest.approx(0.30574, abs=1e-4)
    # p = 0.7 over 100: (0.7 + 0.019208) / 1.038416 - 1.96 * sqrt(0.0021 + 0.00009604) / 1.038416
    assert wilson_lower(0.7, 100) == pytest.approx(0.60415, abs=1e-4)


def test_wilson_upper_end_by_hand():
    # p = 5/8 over 8: centre 0.58445 + half-width 0.27871 (as for the lower end above)
    assert wilson_upper(0.625, 8) == pytest.approx(0.86316, abs=1e-4)
    # p = 0 over 10: (0 + 0.19208) / 1.38416 + 1.96 * sqrt(0.0096040) / 1.38416 = 0.27753
    assert wilson_upper(0.0, 10) == pytest.approx(0.27753, abs=1e-4)


def test_pairs_to_tell_a_judge_from_chance_by_hand():
    # n > (z / (2 (p - 0.5)))^2 with z = 1.96: p = 0.6: (1.96 / 0.2)^2 = 96.04 -> 97 pairs
    assert pairs_to_beat_chance(0.6) == 97
    # p = 0.625: (1.96 / 0.25)^2 = 61.47 -> 62; p = 0.75: 3.92^2 = 15.37 -> 16;
    # p = 0.55: 19.6^2 = 384.16 -> 385
    assert [pairs_to_beat_chance(p) for p in (0.625, 0.75, 0.55)] == [62, 16, 385]
    # at or below chance no number of pairs will do
    assert pairs_to_beat_chance(0.5) is None and pairs_to_beat_chance(0.4) is None
    # and it is the trust rule's own bound: the Wilson lower end passes 0.5 there, not before
    for p in (0.6, 0.625, 0.75, 0.55):
        n = pairs_to_beat_chance(p)
        assert wilson_lower(p, n) > 0.5 >= wilson_lower(p, n - 1)


def test_a_judge_whose_whole_interval_is_below_chance_is_called_worse_than_chance():
    # 1 of 15 held-out pairs (a tester's own-data smoke run): Wilson (0.012, 0.298)
    ok, reason = judge_is_trustworthy(1 / 15, 15)
    assert not ok
    assert reason.startswith(
        "held-out judge worse than chance: accuracy 0.067 on 15 held-out pairs "
        "(95% CI 0.012-0.298 < 0.5); it prefers the rejected answer"
    )
    # an interval reaching 0.5 is only too weak: 5 of 15 -> Wilson (0.152, 0.583)
    assert judge_is_trustworthy(5 / 15, 15)[1].startswith("held-out judge too weak")


def test_a_weak_judge_says_what_was_measured_and_how_many_pairs_would_do():
    # given a judge at 7 of 15 held-out pairs (a few hundred preference rows; own-data trial)
    ok, reason = judge_is_trustworthy(7 / 15, 15)
    # then the reason gives its accuracy, its interval, the pairs, and the pairs a judge at
    # the floor needs to be told from chance: 7/15 -> Wilson (0.248, 0.699); 0.6 -> 97 pairs
    assert not ok
    assert reason == (
        "held-out judge too weak: accuracy 0.467 on 15 held-out pairs (95% CI 0.248-0.699) "
        "< floor 0.60; a judge at the floor (0.60) is told from chance on at least 97 "
        "held-out pairs, there were 15"
    )
    # and a floor set higher asks for fewer pairs (0.75: 16) but is judged the same way
    assert judge_is_trustworthy(0.7, 400, floor=0.75)[1].endswith(
        "a judge at the floor (0.75) is told from chance on at least 16 held-out pairs, "
        "there were 400"
    )


def test_the_report_judges_the_judge_at_the_gates_floor():
    metrics = {"judge/training_rows": 50.0, "judge/training_pairs": 50.0}
    metrics |= {"judge/test_pairs": 400.0, "judge/accuracy_heldout_pairs": 0.7}
    assert report_block(metrics, None, floor=0.6)["trustworthy"]
    # given the gate's judge_accuracy_floor at 0.75, the report says what the gate does
    block = report_block(metrics, None, floor=0.75)
    assert not block["trustworthy"] and "< floor 0.75" in block["trust_reason"]


def test_a_judge_passing_the_floor_on_few_pairs_is_not_trusted():
    # given 5 of 8 held-out pairs right (0.625 >= the 0.60 floor; found in a trial)
    ok, reason = judge_is_trustworthy(0.625, 8)
    # then it is not trusted: its 95% interval reaches below chance
    assert not ok
    assert reason == (
        "held-out judge not shown better than chance: accuracy 0.625 on 8 held-out pairs, "
        "95% CI lower end 0.306 <= 0.5 (too few pairs: a judge at 0.625 is told from chance "
        "on at least 62 held-out pairs, there were 8)"
    )
    # and the same accuracy on 400 pairs is
    assert judge_is_trustworthy(0.625, 400)[0]


def test_report_block_says_whether_the_judge_is_within_010_of_the_labelers():
    metrics = {
        "judge/training_rows": 7.0,
        "judge/training_pairs": 42.0,
        "judge/test_pairs": 18.0,
        "judge/accuracy_heldout_pairs": 0.5,
    }
    near = {"judge": 0.66, "heldout_labelers": 0.75, "pairs": 10}
    block = report_block(metrics, near, floor=0.6)
    assert (block["training_pairs"], block["trustworthy"], block["agreement_within_margin"]) == (
        42,
        False,
        True,
    )
    assert not report_block(metrics, near | {"judge": 0.64}, floor=0.6)["agreement_within_margin"]
    assert "agreement_with_gold" not in report_block(metrics, None, floor=0.6)


# --- training on files, with a tiny model --------------------------------------


def test_scoring_rows_of_mixed_k_equals_scoring_each_row_alone(tiny_dirs):
    rm, tokenizer = reward_model_from_causal_lm(tiny_dirs[1])
    rows = [
        {"prompt": "hi", "responses": ["a", "b"]},
        {"prompt": "yo", "responses": ["c", "d", "e"]},
    ]
    together = score_rows(rm, tokenizer, rows, 64)
    assert together.shape == (2, 3)
    for i, one in enumerate(rows):
        alone = _forward(rm.eval(), tokenizer, [one], 64)[0]
        torch.testing.assert_close(together[i, : len(one["responses"])], alone)


def _write_comparisons(folder: Path) -> Path:
    """RM data that prefers "no"; held-out data that prefers "yes": the judge must learn the latter."""
    rm_rows = [
        row(f"rm{i}", "u0", "L0", f"Q{i}", ["yes", "no"] * 2, [1, 3, 0, 2]) for i in range(8)
    ]
    heldout = [
        row(
            f"h{i}",
            f"t{i % 6}",
            "H0",
            f"count the letters in word{i}",
            ["yes", "no", "yes", "no"],
            [0, 2, 1, 3],
        )
        for i in range(36)
    ]
    golds = [[1.0, 0.0, 1.0, 0.0]] * len(heldout)
    return _write_tables(folder, rm_rows, heldout, golds, ("no", "yes"), "count")


def _write_tables(folder, rm_rows, heldout, golds, demonstrations, family) -> Path:
    """The comparison tables, gold of the held-out rows, and the profile the RM function
    reads (demonstrations, its bias, and the test prompts' families); returns the profile folder."""
    write_jsonl(folder / comparisons.TRAIN, rm_rows)
    write_jsonl(folder / comparisons.VALID, rm_rows[:2])
    write_jsonl(folder / comparisons.HELDOUT, heldout)
    write_jsonl(
        folder / comparisons.HELDOUT_GOLD,
        [
            {"comparison_id": r["comparison_id"], "golds": g}
            for r, g in zip(heldout, golds, strict=True)
        ],
    )
    profile = folder / "profile"
    write_jsonl(
        profile / layout.SFT_TRAIN, [{"prompt": "Q0", "response": r} for r in demonstrations]
    )
    write_jsonl(
        profile / layout.EVAL_TEST,
        [{"prompt_id": r["prompt_id"], "family": family} for r in heldout],
    )
    return profile


def test_the_judge_learns_the_held_out_preference_from_held_out_rows_only(
    tiny_dirs, tmp_path, one_thread
):
    # given RM comparisons that prefer "no" and held-out ones that prefer "yes"
    sft_dir, _ = tiny_dirs
    profile = _write_comparisons(tmp_path)
    out = tmp_path / "judge"
    out.mkdir()
    cfg = JudgeConfig(epochs=4, lr=3e-3, batch_size=4)
    # when the judge trains
    logged = []
    metrics = train_judge_on_comparisons(
        sft_dir, profile, tmp_path, cfg, seed=0, out_dir=out, log=lambda *a: logged.append(a)
    )
    # then its epoch figures are named for the rankings they come from, its own training ones
    epochs = [names for _, names, _, unit in logged if unit == "epoch"]
    assert len(epochs) == 4
    assert all(set(n) == {"training_rankings_loss", "training_rankings_accuracy"} for n in epochs)
    # then it trained on held-out users' rows only: 4 of 6 users' prompts, none of the RM's
    trained = set(json.loads((out / "trained_prompts.json").read_text()))
    assert trained and all(p.startswith("count the letters") for p in trained)
    assert metrics["judge/training_rows"] == len(trained) == 24
    assert (metrics["judge/training_pairs"], metrics["judge/test_pairs"]) == (24 * 6, 12 * 6)
    # and on the 2 users it never saw it orders "yes" above "no" (the held-out labelers' taste)
    judge = HeldOutJudge.load(out)
    assert judge.compare("count the letters in word99", "yes", "no") == 1.0
    assert judge.compare("count the letters in word99", "no", "yes") == 0.0
    assert judge.compare("anything", "same", "same ") == 0.5
    # and its win rate of "yes" over "no" on two prompts x 2 samples is 1, of a text over itself 0.5
    prompts = ["count the letters in word98"] * 2 + ["count the letters in word99"] * 2
    assert judge.win_rate(prompts, ["yes"] * 4, ["no"] * 4, 2)["mean"] == 1.0
    assert judge.win_rate(prompts, ["no", "yes"] * 2, ["no", "yes"] * 2, 2)["ci95"] == [0.5, 0.5]
    # only the yes/no pairs are decided (4 of the 6 per ranking); yes-yes and no-no pairs are ties
    assert metrics["judge/accuracy_vs_gold"] == 1.0
    assert metrics["judge/accuracy_heldout_pairs"] == pytest.approx(5 / 6)


def test_the_judge_refuses_to_train_when_the_rm_saw_its_users(tiny_dirs, tmp_path):
    profile = _write_comparisons(tmp_path)
    leaked = [row("rmX", "t0", "L0", "Q", ["a", "b", "c", "d"], [0, 1, 2, 3])]
    write_jsonl(tmp_path / comparisons.VALID, leaked)
    with pytest.raises(JudgeDataError, match="user_id='t0'"):
        train_judge_on_comparisons(
            tiny_dirs[0], profile, tmp_path, JudgeConfig(), 0, tmp_path, print
        )
    assert not (tmp_path / "model").exists()


def test_the_judge_block_reaches_mlflow_and_report_md():
    from instructflow.tasks.judge_trust import parent_metrics
    from instructflow.tasks.report import empty_report, to_markdown

    metrics = {
        "judge/training_rows": 7.0,
        "judge/training_pairs": 42.0,
        "judge/test_pairs": 180.0,
        "judge/accuracy_heldout_pairs": 0.7,
    }
    figures = {"judge": 0.7, "heldout_labelers": 0.75, "pairs": 10}
    agreement = figures | {"unseen_prompts": figures, "by_policy": {"ppo": figures}}
    block = report_block(metrics, agreement, floor=0.6)
    assert parent_metrics(block) == {
        "judge/accuracy_heldout_pairs": 0.7,
        "judge/training_pairs": 42.0,
        "judge/trustworthy": 1.0,
        "eval/judge/gold_agreement": 0.7,
        "eval/judge/labelers_gold_agreement": 0.75,
        "eval/judge/gold_pairs": 10.0,
        "eval/judge/unseen_prompts/gold_agreement": 0.7,
        "eval/judge/unseen_prompts/labelers_gold_agreement": 0.75,
        "eval/judge/unseen_prompts/gold_pairs": 10.0,
    }
    report = empty_report({"mlflow_run_id": "r"}) | {"judge": block}
    markdown = to_markdown(report)
    assert "## Held-out judge" in markdown and "| ppo | 0.700 | 0.750 | 10 |" in markdown


def test_figures_from_an_untrustworthy_judge_carry_a_warning_in_report_md():
    from instructflow.tasks.report import empty_report, to_markdown

    # given a dataset run whose judge scored 0.0 on 5 held-out pairs, and its policy rows
    metrics = {
        "judge/training_rows": 12.0,
        "judge/training_pairs": 12.0,
        "judge/test_pairs": 5.0,
        "judge/accuracy_heldout_pairs": 0.0,
    }
    win = {"mean": 0.976, "ci95": [0.929, 1.0]}
    rows = {name: {"win_rate_vs_sft": win, "gold_score": None} for name in ("base", "ppo")}
    report = empty_report({"mlflow_run_id": "r"}) | {
        "judge": report_block(metrics, None, floor=0.6),
        "dataset": {"tables": {}},
        "policies": rows,
    }
    markdown = to_markdown(report)
    # then the policy table is headed by why its win rates say little, with the pair counts
    assert (
        "> The win rates below are the held-out judge's, which is not to be trusted here: "
        "held-out judge worse than chance: accuracy 0.000 on 5 held-out pairs "
        "(95% CI 0.000-0.434 < 0.5)"
    ) in markdown
    assert "differ from the ones it trained on (trained on 12 pairs). Let people" in markdown
    [warning] = [line for line in markdown.splitlines() if "not to be trusted here" in line]
    assert warning.count("5 held-out pairs") == 1  # said once, by the reason
    # and it leaves out the columns no policy has a figure in (gold, on a dataset)
    assert "| policy | win_rate_vs_sft |" in markdown and "gold_score" not in markdown
    # and on the embedded world the warning names the judge's column only
    embedded = report | {"dataset": None}
    assert "> judge_win_rate_vs_sft is the held-out judge's" in to_markdown(embedded)


def _write_echo_comparisons(folder: Path, n: int) -> Path:
    """Held-out pairs whose better response repeats the prompt's word: nothing a judge can
    guess from the responses alone (each word is as often chosen as rejected)."""
    words = [f"w{i}" for i in range(20)]
    heldout = []
    for i in range(n):
        asked, other = words[i % 20], words[(i * 7 + 3) % 20]
        other = other if other != asked else words[(i + 1) % 20]
        responses, ranking = ([asked, other], [0, 1]) if i % 2 else ([other, asked], [1, 0])
        heldout.append(row(f"h{i}", f"t{i % 10}", "H0", f"say {asked}", responses, ranking))
    rm_rows = [row(f"rm{i}", "u0", "L0", f"Q{i}", ["a", "b"], [0, 1]) for i in range(4)]
    golds = [[1.0, 0.0] if r["ranking"] == [0, 1] else [0.0, 1.0] for r in heldout]
    return _write_tables(folder, rm_rows, heldout, golds, ("a",), "echo")


def test_a_judge_trained_on_20_pairs_blocks_automatic_promotion_in_one_line(
    tiny_dirs, tmp_path, one_thread
):
    from instructflow.tasks.gate import GateConfig, judge_decision

    # given 400 held-out pairs, of which the judge may train on 20
    profile = _write_echo_comparisons(tmp_path, 400)
    out = tmp_path / "judge"
    out.mkdir()
    cfg = JudgeConfig(max_train_pairs=20)
    # when it trains
    metrics = train_judge_on_comparisons(
        tiny_dirs[0], profile, tmp_path, cfg, seed=0, out_dir=out, log=lambda *a: None
    )
    # then it saw 20 pairs and is measured weak on the pairs of users it never saw
    assert metrics["judge/training_pairs"] == 20 and metrics["judge/test_pairs"] >= 100
    accuracy = metrics["judge/accuracy_heldout_pairs"]
    assert accuracy < 0.6, accuracy
    # and the gate does not promote on it, even on a clear win, and says why in one line
    win = {"mean": 0.8, "ci95": [0.7, 0.9]}
    decision = judge_decision(win, accuracy, int(metrics["judge/test_pairs"]), GateConfig())
    assert not decision.promote
    assert decision.reason.startswith(  # worse than chance is the weakest kind
        tuple(f"no automatic promotion: held-out judge {w}" for w in ("too weak", "worse than"))
    )
    assert "\n" not in decision.reason
    # while the same judge trained on every training pair clears the floor (measured: 0.33 -> 0.67)
    full = tmp_path / "judge-all"
    full.mkdir()
    metrics = train_judge_on_comparisons(
        tiny_dirs[0], profile, tmp_path, JudgeConfig(), seed=0, out_dir=full, log=lambda *a: None
    )
    assert metrics["judge/training_pairs"] > 200
    pairs = int(metrics["judge/test_pairs"])
    assert judge_decision(win, metrics["judge/accuracy_heldout_pairs"], pairs, GateConfig()).promote


def test_the_plots_caption_of_an_untrusted_judge_is_the_gates_verdict_in_short():
    def metrics(accuracy: float, pairs: int) -> dict:
        return {"judge/accuracy_heldout_pairs": accuracy, "judge/test_pairs": float(pairs)}

    # given a judge at 7 of 15 held-out pairs (below the floor)
    caption = untrusted_caption(metrics(7 / 15, 15))
    # then the caption names what was measured, its interval, the pairs and the floor
    assert caption == (
        "judge untrusted: accuracy 0.467 [95% CI 0.248-0.699] on 15 held-out pairs, "
        "below floor 0.60"
    )
    # and a judge over the floor on too few pairs is untrusted for that reason
    assert untrusted_caption(metrics(0.625, 8)) == (
        "judge untrusted: accuracy 0.625 [95% CI 0.306-0.863] on 8 held-out pairs, "
        "not shown better than chance (floor 0.60)"
    )
    # and an untested judge says so
    assert untrusted_caption(metrics(float("nan"), 0)).startswith("judge untested")
    # and the caption exists exactly where the gate's rule refuses the judge, floor included
    for accuracy, pairs, floor in [(0.7, 400, 0.6), (0.7, 400, 0.75), (0.55, 400, 0.5)]:
        trusted = judge_is_trustworthy(accuracy, pairs, floor)[0]
        assert (untrusted_caption(metrics(accuracy, pairs), floor) is None) == trusted


def test_the_judges_training_says_it_is_the_judge_not_the_reward_model(
    tiny_dirs, tmp_path, one_thread, capsys
):
    # given held-out rankings to train the judge on
    profile = _write_comparisons(tmp_path)
    out = tmp_path / "judge"
    out.mkdir()
    # when the judge trains (the reward model's training code, on its own data)
    train_judge_on_comparisons(
        tiny_dirs[0], profile, tmp_path, JudgeConfig(epochs=1), 0, out, lambda *a: None
    )
    # then its log names the held-out judge, never "the reward model" (the judge stage's
    # log said "training the reward model on 32 rankings" right after its own line)
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("training the held-out judge on 24 rankings") for line in lines)
    assert any(line.endswith("of other users test it") for line in lines), lines  # user ids
    # and on a dataset without user ids (one made-up id per prompt) it says prompts
    heldout = read_jsonl(tmp_path / comparisons.HELDOUT)
    write_jsonl(
        tmp_path / comparisons.HELDOUT,
        [r | {"user_id": f"anon-{r['comparison_id']}"} for r in heldout],
    )
    (tmp_path / "judge-anon").mkdir()
    train_judge_on_comparisons(
        tiny_dirs[0], profile, tmp_path, JudgeConfig(epochs=1), 0, tmp_path / "judge-anon",
        lambda *a: None,
    )  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert any(line.endswith("on other prompts test it") for line in lines), lines
    assert not [line for line in lines if "training the reward model" in line], lines
