import pytest

from instructflow.tasks.gate import decide


def test_a_clearly_better_challenger_is_promoted():
    # given a win rate whose CI is above 0.5 and no loss on the public suite
    decision = decide(0.62, (0.57, 0.67), 0.80, 0.81, margin=0.02, incumbent="sft")
    # then the gate promotes, saying why
    assert decision.promote
    assert "beats sft" in decision.reason


def test_a_ci_touching_one_half_is_not_enough():
    # given a better mean whose CI's lower end is 0.5 or below
    decision = decide(0.54, (0.49, 0.59), 0.80, 0.80, margin=0.02, incumbent="champion v3")
    # then the gate refuses and names the lower end
    assert not decision.promote
    assert "0.490 <= 0.5" in decision.reason


def test_a_worse_candidate_is_never_promoted():
    # given a candidate that loses head to head (e.g. trained against a sign-flipped reward)
    decision = decide(0.21, (0.17, 0.25), 0.80, 0.80, margin=0.02, incumbent="champion v1")
    # then it is not promoted
    assert not decision.promote


def test_alignment_tax_beyond_the_margin_blocks_promotion():
    # given a clear win but 5 points lost on the public suite with a 2-point margin
    decision = decide(0.70, (0.65, 0.75), 0.75, 0.80, margin=0.02, incumbent="sft")
    # then the gate refuses because of the public suite
    assert not decision.promote
    assert "public-suite accuracy 0.750 is more than 0.02 below" in decision.reason


def test_manual_promotion_needs_a_reason():
    from instructflow.tasks.promotion import promote_manually

    with pytest.raises(ValueError, match="reason"):
        promote_manually("1", "   ")


def test_a_win_within_the_seed_noise_is_not_enough():
    # given a CI starting at 0.55 and a sweep that measured 0.083 of seed noise (two seeds of
    # one configuration met at 0.417)
    decision = decide(0.6, (0.55, 0.65), 0.8, 0.8, margin=0.02, incumbent="sft", win_margin=0.083)
    # then 0.55 <= 0.583 refuses, naming the noise margin, which the decision carries
    assert not decision.promote
    assert "0.550 <= 0.5 + 0.083 (seed noise)" in decision.reason
    assert decision.win_margin == 0.083
    # and the same evidence passes a gate without a margin
    assert decide(0.6, (0.55, 0.65), 0.8, 0.8, margin=0.02, incumbent="sft").promote


def test_a_weak_judge_blocks_automatic_promotion_in_one_line():
    from instructflow.tasks.gate import GateConfig, judge_decision

    # given a clear win as the judge sees it, from a judge at chance on held-out pairs
    # (what a 20-pair judge scored: 0.46 on smoke)
    win = {"mean": 0.70, "ci95": [0.62, 0.78]}
    decision = judge_decision(win, judge_accuracy=0.46, judge_pairs=200, cfg=GateConfig())
    # then the gate does not promote, and says why in one line
    assert not decision.promote
    assert decision.reason.startswith(
        "no automatic promotion: held-out judge too weak: accuracy 0.460"
    )
    assert "\n" not in decision.reason
    # and the same win from a trustworthy judge promotes
    assert judge_decision(win, judge_accuracy=0.72, judge_pairs=200, cfg=GateConfig()).promote
    # and a floor set higher than the judge's accuracy blocks it again
    assert not judge_decision(win, 0.72, 200, GateConfig(judge_accuracy_floor=0.8)).promote
    # and so does the same accuracy on too few pairs to tell it from chance
    few = judge_decision(win, 0.72, 8, GateConfig())
    assert not few.promote and "not shown better than chance" in few.reason


def test_without_judge_verdicts_nothing_is_promoted():
    from instructflow.tasks.gate import GateConfig, judge_decision

    decision = judge_decision(None, judge_accuracy=0.9, judge_pairs=200, cfg=GateConfig())
    assert not decision.promote and "no held-out judge verdicts" in decision.reason


def test_without_a_public_suite_the_gate_decides_on_the_win_rate_alone():
    from instructflow.tasks.gate import GateConfig, judge_decision

    # given a dataset run's evidence: a win rate, and no public suite at all
    win = {"mean": 0.70, "ci95": [0.62, 0.78]}
    decision = judge_decision(win, judge_accuracy=0.72, judge_pairs=200, cfg=GateConfig())
    # then the decision records no public-suite figures and its reason names none
    assert decision.promote
    assert (decision.public_suite_challenger, decision.public_suite_incumbent) == (None, None)
    assert decision.reason == "beats sft: win rate 0.700 (95% CI 0.620-0.780)"
    # and a re-decision on people's rankings, with no public suite either, is the same rule
    again = decide(0.7, (0.62, 0.78), None, None, margin=0.02, incumbent="sft")
    assert again.promote and "public" not in again.reason


def test_a_candidate_holding_the_incumbents_own_weights_is_never_promoted():
    from instructflow.tasks.gate import GateConfig, judge_decision

    # given PPO kept SFT's weights, and sampling noise that put the CI above 0.5 anyway
    # (0.621 [0.515, 0.727] on 22 prompts, seen on a user's data)
    win = {"mean": 0.621, "ci95": [0.515, 0.727]}
    kept = decide(0.621, (0.515, 0.727), 0.8, 0.8, margin=0.02, incumbent="sft", same_weights=True)
    # then the gate refuses, saying the candidate is SFT itself, on either kind of evidence
    assert not kept.promote
    assert kept.reason == "the candidate holds sft's own weights: it cannot beat itself"
    judged = judge_decision(win, 0.72, 200, GateConfig(), "sft", same_weights=True)
    assert not judged.promote and "holds sft's own weights" in judged.reason
    # and the same figures for other weights pass
    assert decide(0.621, (0.515, 0.727), 0.8, 0.8, margin=0.02, incumbent="sft").promote
    assert judge_decision(win, 0.72, 200, GateConfig(), "sft").promote
