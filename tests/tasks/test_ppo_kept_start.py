"""The note a run gives when a PPO stage kept its starting (SFT) weights."""

from instructflow.tasks.ppo_selection import kept_start_note


def test_a_stage_that_kept_iteration_0_says_the_candidate_is_sft():
    note = kept_start_note(
        "ppo_ptx", {"ppo_ptx/chosen_iteration": 0.0, "ppo_ptx/iterations_run": 6.0}
    )
    assert note is not None
    assert note.startswith("ppo_ptx kept its starting weights (SFT's): none of 6 iterations")


def test_a_stage_that_kept_a_later_iteration_says_nothing():
    assert kept_start_note("ppo", {"ppo/chosen_iteration": 4.0, "ppo/iterations_run": 6.0}) is None


def test_a_stage_without_a_selection_says_nothing():
    # sft as candidate, or a stage whose metrics are another stage's
    assert kept_start_note("sft", {"sft/val_loss": 1.0}) is None
    assert kept_start_note("ppo", {"ppo_ptx/chosen_iteration": 0.0}) is None
