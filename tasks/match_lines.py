"""The two lines a gate's head-to-head prints: what it plays before the sampling (minutes
with a real model: the run is not stuck), and the win rate after."""


def announce(challenger: str, incumbent: str, prompts: int, samples: int, judged_by: str) -> None:
    print(
        f"head-to-head: {challenger} vs {incumbent} on {prompts} test prompts x {samples}"
        f" samples, judged by {judged_by}",
        flush=True,
    )


def result(challenger: str, incumbent: str, win_rate: dict) -> None:
    """`win_rate`: stats.prompt_mean_with_ci's mean and ci95."""
    low, high = win_rate["ci95"]
    print(
        f"head-to-head: {challenger} wins {win_rate['mean']:.3f} vs {incumbent}"
        f" (95% CI {low:.3f}-{high:.3f})",
        flush=True,
    )
