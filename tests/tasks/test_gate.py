"""What a gate's verdict may do to the aliases (tasks/gate.alias_effect), every case worked out by hand."""

import itertools

import pytest

from instructflow.tasks.gate import (
    AliasEffect,
    alias_effect,
    decide,
    gate_markdown,
    gate_summary,
    held_back,
)

# passed, auto_promote, require_approval, champion_moved, promoted_here -> promote,
# awaiting_approval, restore (1 true, 0 false)
CASES = """
00000 000
00001 001
00010 000
00011 000
00100 000
00101 001
00110 000
00111 000
01000 000
01001 001
01010 000
01011 000
01100 000
01101 001
01110 000
01111 000
10000 000
10001 000
10010 000
10011 000
10100 010
10101 010
10110 010
10111 010
11000 100
11001 100
11010 000
11011 000
11100 010
11101 010
11110 010
11111 010
"""
TABLE = [
    (tuple(c == "1" for c in given), tuple(c == "1" for c in then))
    for given, then in (line.split() for line in CASES.strip().splitlines())
]


def test_the_table_covers_every_combination_once():
    assert sorted(given for given, _ in TABLE) == sorted(itertools.product([False, True], repeat=5))


@pytest.mark.parametrize(("given", "then"), TABLE)
def test_what_a_verdict_may_do_to_the_aliases(given, then):
    # given a verdict, the gate's settings, whether champion moved since the judged run's
    # gate and whether that gate promoted the judged version
    passed, auto_promote, require_approval, moved, promoted_here = given
    # when the effect is worked out
    effect = alias_effect(passed, auto_promote, require_approval, moved, promoted_here)
    # then it is the row's: promote only a passed verdict, with auto_promote, no approval
    # required and champion where the gate left it; a passed verdict under approval waits;
    # champion goes back only from a version the gate promoted and people then failed
    assert effect == AliasEffect(*then)


def test_a_first_gate_defaults_to_a_champion_unmoved_and_not_promoted_here():
    # given the first gate on a version (nothing moved since, nothing promoted before)
    effect = alias_effect(passed=True, auto_promote=True, require_approval=False)
    # then it promotes, and restores nothing
    assert effect == AliasEffect(promote=True, awaiting_approval=False, restore=False)


def test_the_promotion_gate_artifact_names_public_suite_figures_only_where_there_are_some():
    # given a gate on the embedded world (public suite) and one on a dataset (none)
    world = decide(0.7, (0.6, 0.8), 0.42, 0.40, 0.02, "sft")
    dataset = decide(0.7, (0.6, 0.8), None, None, 0.02, "sft")
    # when each is written as the promotion-gate artifact
    # then the world's says the suite's accuracies, each named by its side, and the
    # dataset's leaves the line out, rather than failing on figures nobody measured
    text = gate_markdown("m", "1", world, {"promoted": True})
    assert "- public-suite accuracy: v1 0.420 vs sft 0.400\n" in text
    text = gate_markdown("m", "1", dataset, {"promoted": True})
    assert "public-suite" not in text and "- win rate: 0.700 (95% CI 0.600 - 0.800)" in text


@pytest.mark.parametrize(
    ("require_approval", "auto_promote", "verdict"),
    [
        (False, True, "PROMOTED to champion"),
        (True, True, "PASSED, awaiting a person's approval"),
        (False, False, "NOT promoted"),
    ],
)
def test_the_promotion_gate_artifact_says_what_happened_to_champion_not_only_that_it_passed(
    require_approval, auto_promote, verdict
):
    # given a gate that passed, under each way of acting on a pass
    decision = decide(0.7, (0.6, 0.8), 0.42, 0.40, 0.02, "champion v3")
    effect = alias_effect(decision.promote, auto_promote, require_approval)
    gate = {"promoted": effect.promote, "awaiting_approval": effect.awaiting_approval}
    # when it is written as the promotion-gate artifact
    text = gate_markdown("m", "4", decision, gate)
    # then its title and its description (the line Prefect's artifact list shows) say
    # whether `champion` moved, as report.md and the model card do: a run paused for
    # approval, or one without auto_promote, has promoted nothing yet
    assert text.startswith(f"# Promotion gate: m v4 {verdict}\n")
    assert gate_summary("m", "4", gate) == f"m v4: {verdict.lower()}"


def test_a_failed_gate_says_not_promoted_in_the_artifact_list():
    decision = decide(0.45, (0.38, 0.53), 0.24, 0.24, 0.02, "sft")
    effect = alias_effect(decision.promote, True, False)
    gate = {"promoted": effect.promote, "awaiting_approval": effect.awaiting_approval}
    assert gate_summary("instructflow-policy-smoke", "1", gate) == (
        "instructflow-policy-smoke v1: not promoted"
    )


def test_short_answers_flags_a_candidate_under_a_third_of_sfts_length():
    from instructflow.tasks.gate import short_answers

    sft = {"response_length": 9.0}
    assert short_answers({"sft": sft, "ppo": {"response_length": 2.99}}, "ppo").startswith(
        "ppo's answers average 2.99 words, SFT's 9.00"
    )
    assert short_answers({"sft": sft, "ppo": {"response_length": 3.0}}, "ppo") is None
    assert short_answers({"sft": sft, "ppo": {"response_length": 0.0}}, "ppo") is not None
    assert short_answers({"sft": sft, "ppo": {}}, "ppo") is None  # not measured: no claim
    assert short_answers({"sft": sft}, "sft") is None


def test_the_runs_gate_decision_tag_says_whether_the_rule_passed_not_that_champion_moved():
    from instructflow.tasks.gate import rule_verdict

    # (with approval required, or auto_promote off, a passed gate leaves champion where it was:
    # the tag said "promoted" all the same)
    assert (rule_verdict(True), rule_verdict(False)) == ("passed", "rejected")
    # and one that passed against a champion that moved meanwhile is not called rejected
    assert rule_verdict(False, held=True) == "held back"


def test_a_champion_from_another_base_model_is_named_in_the_reason_the_verdict_unchanged():
    from instructflow.tasks.gate import base_model_caveat, with_caveat

    # given a passed gate against champion v3, trained from another base than the candidate
    decision = decide(0.7, (0.6, 0.8), 0.42, 0.40, 0.02, "champion v3")
    caveat = base_model_caveat("champion v3", "gpt2-medium", "gpt2")
    # then the reason says so after the rule's own words, naming both; the verdict stands
    said = with_caveat(decision, caveat)
    assert said.reason == (
        f"{decision.reason}; not like for like: champion v3 was trained from base model "
        "gpt2-medium, the candidate from gpt2"
    )
    assert said.promote and said.win_rate == decision.win_rate


@pytest.mark.parametrize(("theirs", "ours"), [("gpt2", "gpt2"), (None, "gpt2"), ("gpt2", None)])
def test_a_champion_of_the_same_or_an_unrecorded_base_model_adds_nothing(theirs, ours):
    from instructflow.tasks.gate import base_model_caveat, with_caveat

    decision = decide(0.45, (0.38, 0.53), 0.24, 0.24, 0.02, "champion v3")
    assert base_model_caveat("champion v3", theirs, ours) is None
    assert with_caveat(decision, None) == decision


def test_a_passed_decision_is_held_back_only_when_champion_moved_since_it_was_played():
    # given a passed decision against champion v1, and a failed one
    passed = decide(0.7, (0.6, 0.8), 0.8, 0.8, margin=0.02, incumbent="champion v1")
    failed = decide(0.4, (0.3, 0.5), 0.8, 0.8, margin=0.02, incumbent="champion v1")
    # then champion still at v1 (or none before and after) changes nothing, nor does a failure
    assert held_back(passed, "1", "1") == passed and held_back(passed, None, None) == passed
    assert held_back(failed, "1", "2") == failed
    # and champion moved or unset meanwhile holds the passed one back, saying so
    moved, unset = held_back(passed, "1", "2"), held_back(passed, "1", None)
    assert not moved.promote and not unset.promote
    assert moved.held_back and unset.held_back and not passed.held_back
    assert moved.reason == (
        "champion moved to v2 while this run was gating; run again to gate against it "
        f"({passed.reason})"
    )
    assert unset.reason.startswith("champion was unset while this run was gating; ")
    assert moved.win_rate == passed.win_rate and moved.incumbent == "champion v1"
