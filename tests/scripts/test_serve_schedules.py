"""`make serve` says which deployment schedules are on, and how to pause each (flows/schedules.py)."""

from instructflow.flows.schedules import Schedule, schedule_lines

WEEKLY = Schedule("scheduled-retrain", "id-weekly", None, "0 3 * * 1", "UTC", True, "tiny")
NIGHTLY = Schedule(
    "scheduled-retrain", "id-nightly", "nightly-smoke", "0 2 * * *", "UTC", False, "smoke"
)


def test_an_active_schedule_is_said_to_be_on_with_the_command_that_pauses_it():
    # given scheduled-retrain's weekly schedule on and its nightly one off
    lines = schedule_lines([WEEKLY, NIGHTLY], prefect="prefect")
    text = "\n".join(lines)
    # then the weekly one reads ON, with what it runs and the exact pause command
    assert "scheduled-retrain is ON" in text and "'0 3 * * 1' UTC, profile tiny" in text
    assert "  prefect deployment schedule pause rlhf_pipeline/scheduled-retrain id-weekly" in lines
    # and the nightly one reads off, with the command that switches it on
    assert "scheduled-retrain (nightly-smoke) is off" in text
    assert (
        "  prefect deployment schedule resume rlhf_pipeline/scheduled-retrain id-nightly" in lines
    )


def test_no_schedules_say_nothing():
    assert schedule_lines([]) == []


def test_runs_due_while_the_stack_was_down_are_named_with_the_command_that_cancels_each():
    import datetime

    from instructflow.flows.schedules import LateRun, late_lines

    # given a weekly retrain that fell due while the stack was down
    due = datetime.datetime(2026, 12, 14, 3, 0, tzinfo=datetime.UTC)
    lines = late_lines([LateRun("scheduled-retrain", "run-1", "brave-fox", due)], "prefect")
    # then make serve says the worker starts it now, and how to skip it
    assert lines[0].startswith("1 scheduled run(s) fell due while the stack was down")
    assert "starts them now" in lines[0]
    assert lines[1].startswith("  prefect flow-run cancel run-1 ")
    assert "scheduled-retrain, due 2026-12-14 03:00 UTC" in lines[1]
    # and nothing when none was missed
    assert late_lines([]) == []
