"""tasks.match_lines: the gate's head-to-head lines, as a person reads them in the run's log."""

from instructflow.tasks import match_lines


def test_the_match_is_announced_then_its_win_rate_with_its_interval(capsys):
    match_lines.announce("ppo", "champion v1", 16, 3, "the held-out judge")
    match_lines.result("ppo", "champion v1", {"mean": 0.5625, "ci95": [0.41666, 0.6875]})
    assert capsys.readouterr().out.splitlines() == [
        "head-to-head: ppo vs champion v1 on 16 test prompts x 3 samples,"
        " judged by the held-out judge",
        "head-to-head: ppo wins 0.562 vs champion v1 (95% CI 0.417-0.688)",
    ]
