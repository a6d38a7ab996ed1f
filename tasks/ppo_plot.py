"""The over-optimisation plot: proxy (RM) and true (gold) validation scores against KL to SFT."""

from pathlib import Path


def has_gold(points: list[dict]) -> bool:
    """Whether any point has a gold score (a user's dataset has none: NaN)."""
    return any(p.get("gold") is not None and p["gold"] == p["gold"] for p in points)


def curve_title(stage_name: str, points: list[dict]) -> str:
    """The plot's title: what it shows, so that a dataset's plot does not promise gold."""
    if has_gold(points):
        return f"{stage_name}: proxy vs gold reward"
    return f"{stage_name}: proxy (RM) reward against KL (no gold score on a dataset)"


def curve_figure(points: list[dict], chosen: int, title: str):
    """RM score and gold score against KL to SFT, the kept checkpoint marked.

    The gold score carries +-1 standard error over the validation prompts: the
    gold axis is scaled to its own range, and without the bars a wiggle of
    sampling noise reads like over-optimisation. The legend sits below the axes,
    where it covers no point of either curve.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kl = [p["kl"] for p in points]
    fig, ax_rm = plt.subplots(figsize=(6.4, 4.8), layout="constrained")
    ax_rm.plot(
        kl, [p["rm"] for p in points], "o-", color="tab:blue", label="validation RM score (proxy)"
    )
    axes = [ax_rm]
    # A user's dataset has no gold oracle (gold is NaN): no empty gold axis then.
    if has_gold(points):
        ax_gold = ax_rm.twinx()
        ax_gold.errorbar(
            kl,
            [p["gold"] for p in points],
            yerr=[p.get("gold_se", 0.0) for p in points],  # points from older runs have none
            fmt="s-",
            color="tab:orange",
            capsize=3,
            label="validation gold score (truth), +-1 s.e.",
        )
        ax_gold.set_ylabel("gold score (0-1)", color="tab:orange")
        axes.append(ax_gold)
    ax_rm.axvline(
        points[chosen]["kl"],
        color="grey",
        linestyle="--",
        label=f"kept: iteration {points[chosen]['iteration']}",
    )
    for p in points:
        ax_rm.annotate(
            str(p["iteration"]),
            (p["kl"], p["rm"]),
            fontsize=7,
            textcoords="offset points",
            xytext=(2, 4),
        )
    ax_rm.set_xlabel("KL(policy || SFT) per response, nats (numbers: PPO iteration)")
    ax_rm.set_ylabel("RM score (RM units)", color="tab:blue")
    handles = [h for ax in axes for h in ax.get_legend_handles_labels()[0]]
    fig.legend(
        handles,
        [h.get_label() for h in handles],
        loc="outside lower center",
        ncol=2,
        fontsize=8,
    )
    ax_rm.set_title(title)
    return fig


def plot_curve(points: list[dict], chosen: int, path: Path, title: str) -> None:
    """The over-optimisation plot (curve_figure) saved to `path`."""
    import matplotlib.pyplot as plt

    fig = curve_figure(points, chosen, title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
