"""Plots of the report: what a person would rather look at than read.

Each plot has a `*_figure` function that draws it (tests read the figure) and a
`*_plot` function that saves it. Legends sit outside the axes so that they never
cover data; figures use matplotlib's constrained layout to make room for them.
"""

import shutil
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from instructflow.tasks.report import POLICY_NAMES  # noqa: E402
from instructflow.tasks.splits import TEST_USERS  # noqa: E402

BAR = "#4c72b0"
CANDIDATE_BAR = "#dd8452"
WARNING = "#b2182b"
MARKERS = "osD^vP*X"
KL_LABEL = "KL to SFT (nats per response)"


def _ordered(policies: dict) -> list[str]:
    return [n for n in POLICY_NAMES if n in policies] + [
        n for n in policies if n not in POLICY_NAMES
    ]


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


LABELERS = "held-out labelers"
JUDGE = "the held-out judge"


def win_rate_figure(
    policies: dict,
    candidate: str | None = None,
    judged_by: str = LABELERS,
    warning: str | None = None,
    held_out: str = TEST_USERS,
) -> Figure:
    """Win rate against SFT with 95% CI bars, the paper's headline figure; the candidate the
    promotion gate judged is hatched, in its own colour, with a bold tick label. `judged_by`
    names who judged (on a user's dataset: JUDGE, a reward model on held-out preferences);
    `warning` (judge_trust.untrusted_caption) heads the figure in red when the judge is not
    to be trusted: the plot is often read alone in MLflow, without the report's warning.
    `held_out`: whom the comparisons are on (splits.held_out_group)."""
    names = _ordered(policies)
    means = np.array([policies[n]["win_rate_vs_sft"]["mean"] for n in names])
    lo = np.array([policies[n]["win_rate_vs_sft"]["ci95"][0] for n in names])
    hi = np.array([policies[n]["win_rate_vs_sft"]["ci95"][1] for n in names])
    fig, ax = plt.subplots(figsize=(4.0 + 0.8 * len(names), 4.2), layout="constrained")
    colors = [CANDIDATE_BAR if n == candidate else BAR for n in names]
    bars = ax.bar(names, means, yerr=[means - lo, hi - means], capsize=4, color=colors)
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    handles = [
        Patch(color=BAR, label="policy: mean, 95% CI"),
        Line2D([], [], color="grey", linestyle="--", label="SFT (0.5)"),
    ]
    ax.set_xticks(range(len(names)), [_tick_label(n, candidate) for n in names])
    if candidate in names:
        at = names.index(candidate)
        bars[at].set_hatch("//")
        bars[at].set_edgecolor("black")
        ax.get_xticklabels()[at].set_fontweight("bold")
        handles.insert(
            1,
            Patch(
                facecolor=CANDIDATE_BAR,
                edgecolor="black",
                hatch="//",
                label=f"candidate the gate judged: {candidate}",
            ),
        )
    ax.set_xlabel("policy")
    ax.set_ylabel("win rate vs SFT (share of comparisons)")
    ax.set_ylim(0, 1)
    ax.set_title(f"Preferred over SFT by {judged_by} ({held_out}, 95% CI)")
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    if warning:
        # Wrapped to the figure's width (about 10 bold characters an inch at this size).
        width = int(10 * fig.get_figwidth())
        fig.suptitle(textwrap.fill(warning, width), color=WARNING, fontweight="bold", fontsize=9)
    return fig


# SFT's own bar is fresh SFT samples against the reference SFT samples: 0.5 give or take
# sampling noise. Unlabelled, an SFT bar at 0.54 read as "SFT beats SFT".
SFT_TICK = "sft\n(vs other\nSFT samples)"


def _tick_label(name: str, candidate: str | None) -> str:
    if name == candidate:
        return f"{name}\n(candidate)"
    return SFT_TICK if name == "sft" else name


def win_rate_plot(
    policies: dict,
    path: Path,
    candidate: str | None = None,
    judged_by: str = LABELERS,
    warning: str | None = None,
    held_out: str = TEST_USERS,
) -> Path:
    return _save(win_rate_figure(policies, candidate, judged_by, warning, held_out), path)


def family_heatmap_figure(policies: dict) -> Figure:
    """Gold score per policy and family, each cell's value written in it. The colours span
    the figures' own range: on a 0-1 scale a smoke run's scores (all under 0.15) look alike."""
    names = _ordered(policies)
    families = sorted({f for n in names for f in policies[n]["per_family"]})
    grid = np.array(
        [
            [policies[n]["per_family"].get(f, {}).get("gold_score", np.nan) for f in families]
            for n in names
        ],
        dtype=float,
    )
    finite = grid[np.isfinite(grid)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmax - vmin < 1e-9:  # one value everywhere: a band around it
        vmin, vmax = vmin - 0.005, vmax + 0.005
    fig, ax = plt.subplots(
        figsize=(2.5 + 0.85 * len(families), 1.6 + 0.45 * len(names)), layout="constrained"
    )
    image = ax.imshow(np.ma.masked_invalid(grid), vmin=vmin, vmax=vmax, cmap="viridis")
    ax.set_aspect("auto")
    ax.set_xticks(range(len(families)), families, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    middle = (vmin + vmax) / 2
    for i in range(len(names)):
        for j in range(len(families)):
            value = grid[i, j]
            ax.text(
                j,
                i,
                "-" if np.isnan(value) else f"{value:.3f}",
                ha="center",
                va="center",
                color="white" if np.isnan(value) or value < middle else "black",
                fontsize=8,
            )
    fig.colorbar(image, ax=ax, label="gold score (0-1)")
    ax.set_xlabel("task family")
    ax.set_ylabel("policy")
    ax.set_title("Gold score by task family (test users; colours span this run's range)")
    return fig


def family_heatmap(policies: dict, path: Path) -> Path:
    return _save(family_heatmap_figure(policies), path)


def score_vs_kl_figure(policies: dict) -> Figure:
    """Gold and RM score of each policy against its KL to SFT. Policies are told apart by
    colour and marker in one legend beside the panels: several sit at KL 0 (sft and the
    policies PPO kept at its start), where labels beside the points would collide."""
    names = _ordered(policies)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.9), sharex=True, layout="constrained")
    sizes = np.linspace(110, 35, max(len(names), 2))  # later points fit inside earlier ones
    for i, name in enumerate(names):
        kl = max(0.0, policies[name]["kl_to_sft"])
        style = {
            "color": f"C{i % 10}",
            "marker": MARKERS[i % len(MARKERS)],
            "s": sizes[i],
            "edgecolors": "black",
            "linewidths": 0.5,
            "alpha": 0.85,
            "label": name,
        }
        left.scatter(kl, policies[name]["gold_score"]["mean"], **style)
        right.scatter(kl, policies[name]["rm_score"]["mean"], **style)
    for ax in (left, right):
        ax.set_xlabel(KL_LABEL)
    left.set_ylabel("gold score (0-1)")
    right.set_ylabel("reward-model score (RM units)")
    left.set_title("Gold (true) score")
    right.set_title("Proxy (RM) score")
    fig.suptitle("Scores against KL to SFT (test users)")
    fig.legend(*left.get_legend_handles_labels(), loc="outside right upper", title="policy")
    return fig


def score_vs_kl_plot(policies: dict, path: Path) -> Path:
    return _save(score_vs_kl_figure(policies), path)


WIN_RATE = "win_rate_vs_sft.png"


def report_plots(
    policies: dict, folder: Path, candidate: str | None = None, candidates: tuple[str, ...] = ()
) -> list[Path]:
    """The report's plots, drawn into `folder`; `candidate` (the policy the promotion gate
    judged) is marked in the win-rate plot. With `candidates`, one win-rate plot per possible
    candidate instead (`win_rate_vs_sft-<candidate>.png`): the evaluation draws them before
    the gate is known, and the report takes its candidate's (for_report)."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = WIN_RATE.removesuffix(".png")
    win_rates = [
        win_rate_plot(policies, folder / f"{stem}-{name}.png", name)
        for name in candidates
        if name in policies
    ] or [win_rate_plot(policies, folder / WIN_RATE, candidate)]
    return [
        *win_rates,
        family_heatmap(policies, folder / "per_family_gold.png"),
        score_vs_kl_plot(policies, folder / "score_vs_kl.png"),
    ]


def judged_plots(
    policies: dict,
    folder: Path,
    candidates: tuple[str, ...],
    warning: str | None = None,
    held_out: str = TEST_USERS,
) -> list[Path]:
    """The plots of a run on a user's dataset, drawn into `folder`: the held-out judge's win
    rates against SFT, one per possible candidate as report_plots draws them (for_report
    takes the gate's), headed by `warning` when the judge is untrusted, titled with whom
    the comparisons are on (`held_out`, splits.held_out_group). None without the
    judge's verdicts; no gold score, so no per-family or score-against-KL plot (a proxy RM
    score alone is not evidence of quality)."""
    judged = {n: row for n, row in policies.items() if row.get("win_rate_vs_sft")}
    if not judged:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    stem = WIN_RATE.removesuffix(".png")
    return [
        win_rate_plot(judged, folder / f"{stem}-{name}.png", name, JUDGE, warning, held_out)
        for name in candidates
        if name in judged
    ] or [win_rate_plot(judged, folder / WIN_RATE, None, JUDGE, warning, held_out)]


def for_report(figures: list[Path], candidate: str | None, folder: Path) -> list[Path]:
    """The evaluation's plots copied into the report's `folder`: its candidate's win-rate
    plot as win_rate_vs_sft.png (copied, not drawn again: drawing takes about a second,
    which an unchanged re-run would pay every time), the others as they are."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = WIN_RATE.removesuffix(".png")
    out = []
    for figure in figures:
        name = figure.name
        if name.startswith(f"{stem}-"):
            if name != f"{stem}-{candidate}.png":
                continue
            name = WIN_RATE
        out.append(Path(shutil.copy2(figure, folder / name)))
    return out
