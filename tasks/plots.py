"""Plots of the report: what a person would rather look at than read."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from instructflow.tasks.report import POLICY_NAMES  # noqa: E402


def _ordered(policies: dict) -> list[str]:
    return [n for n in POLICY_NAMES if n in policies] + [
        n for n in policies if n not in POLICY_NAMES
    ]


def win_rate_plot(policies: dict, path: Path) -> Path:
    """Win rate against SFT with 95% CI bars, the paper's headline figure."""
    names = _ordered(policies)
    means = np.array([policies[n]["win_rate_vs_sft"]["mean"] for n in names])
    lo = np.array([policies[n]["win_rate_vs_sft"]["ci95"][0] for n in names])
    hi = np.array([policies[n]["win_rate_vs_sft"]["ci95"][1] for n in names])
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.bar(names, means, yerr=[means - lo, hi - means], capsize=4, color="#4c72b0")
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="SFT (0.5)")
    ax.set_ylabel("win rate vs SFT")
    ax.set_ylim(0, 1)
    ax.set_title("Preferred over SFT by held-out labelers (test users, 95% CI)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def family_heatmap(policies: dict, path: Path) -> Path:
    """Gold score per policy and family."""
    names = _ordered(policies)
    families = sorted({f for n in names for f in policies[n]["per_family"]})
    grid = np.array(
        [
            [policies[n]["per_family"].get(f, {}).get("gold_score", np.nan) for f in families]
            for n in names
        ]
    )
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(families), 0.9 + 0.5 * len(names)))
    image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(families)), families, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(families)):
            ax.text(
                j,
                i,
                f"{grid[i, j]:.2f}",
                ha="center",
                va="center",
                color="white" if grid[i, j] < 0.6 else "black",
                fontsize=8,
            )
    fig.colorbar(image, ax=ax, label="gold score")
    ax.set_title("Gold score by task family (test users)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def score_vs_kl_plot(policies: dict, path: Path) -> Path:
    """Gold and RM score of each policy against its KL to SFT."""
    names = _ordered(policies)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), sharex=True)
    for name in names:
        kl = max(0.0, policies[name]["kl_to_sft"])
        left.scatter(kl, policies[name]["gold_score"]["mean"])
        left.annotate(name, (kl, policies[name]["gold_score"]["mean"]), fontsize=8)
        right.scatter(kl, policies[name]["rm_score"]["mean"])
        right.annotate(name, (kl, policies[name]["rm_score"]["mean"]), fontsize=8)
    left.set_xlabel("KL to SFT (nats per response)")
    right.set_xlabel("KL to SFT (nats per response)")
    left.set_ylabel("gold score")
    right.set_ylabel("reward-model score")
    left.set_title("Gold (true) score")
    right.set_title("Proxy (RM) score")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report_plots(policies: dict, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [
        win_rate_plot(policies, folder / "win_rate_vs_sft.png"),
        family_heatmap(policies, folder / "per_family_gold.png"),
        score_vs_kl_plot(policies, folder / "score_vs_kl.png"),
    ]
