"""The console line of a training loop: step of total, percent, and the time left by hand."""

from instructflow.tasks.progress import Progress, duration_text


def test_the_time_left_follows_the_pace_since_the_first_logged_step():
    progress = Progress("sft")
    # given step 0 logged at t=100 s and step 25 at t=110 s: 0.4 s a step
    first = progress.line(0, {"train_loss": 4.844}, 180, "step", now=100.0)
    line = progress.line(25, {"train_loss": 3.607, "lr": 0.001925}, 180, "step", now=110.0)
    # then the first line has no estimate yet, and the second: 154 steps left at 0.4 s = 61.6 s
    assert first == "[sft] step 1/180 (1%): train_loss=4.844"
    assert line == "[sft] step 26/180 (14%, ~1 min 2 s left): train_loss=3.607, lr=0.001925"
    # and the last step says nothing is left rather than ~0 s
    assert progress.line(179, {"train_loss": 2.0}, 180, now=170.0) == (
        "[sft] step 180/180 (100%): train_loss=2"
    )


def test_a_resumed_loop_estimates_from_its_own_pace_not_from_step_zero():
    # given a loop resumed at step 100 of 200, logging step 100 at t=0 and 110 at t=5
    progress = Progress("rm")
    progress.line(100, {}, 200, now=0.0)
    # then 89 steps are left at 0.5 s a step: 44.5 s
    assert progress.line(110, {}, 200, now=5.0) == "[rm] step 111/200 (56%, ~44 s left): "


def test_epochs_and_steps_keep_their_own_pace():
    progress = Progress("rm")
    progress.line(0, {"train_loss": 0.69}, 100, "step", now=0.0)
    assert progress.line(0, {"valid_loss": 0.69}, 4, "epoch", now=30.0) == (
        "[rm] epoch 1/4 (25%): valid_loss=0.69"
    )
    # 3 epochs left at 60 s an epoch (from epoch 0 at 30 s to epoch 1 at 90 s)
    assert progress.line(1, {"valid_loss": 0.6}, 4, "epoch", now=90.0) == (
        "[rm] epoch 2/4 (50%, ~2 min 0 s left): valid_loss=0.6"
    )


def test_without_a_total_the_line_is_the_plain_one():
    assert Progress("ppo").line(3, {"kl": 0.25}) == "[ppo] step 3: kl=0.25"


def test_durations_read_as_a_person_would_say_them():
    assert duration_text(44.5) == "~44 s"
    assert duration_text(61.6) == "~1 min 2 s"
    assert duration_text(3 * 3600 + 5 * 60 + 9) == "~3 h 05 min"
    assert duration_text(0.3) == "<1 s"
    assert duration_text(-3) == "<1 s"
