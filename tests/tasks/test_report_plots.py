"""The report's plots are readable: titles, axes with units, legends beside the data rather
than over it, labels that do not collide, colours that tell a smoke run's values apart and
the gate's candidate marked."""

import itertools

import matplotlib.pyplot as plt
import pytest
from matplotlib.text import Text

from instructflow.tasks import judge_trust, plots
from instructflow.tasks.ppo_plot import curve_figure, curve_title, plot_curve

FAMILIES = ["brainstorm", "classify", "closed_qa", "extract"]


def _row(win: float, gold: float, rm: float, kl: float, offset: float) -> dict:
    return {
        "win_rate_vs_sft": {"mean": win, "ci95": [win - 0.08, win + 0.08]},
        "gold_score": {"mean": gold, "ci95": [gold - 0.01, gold + 0.01]},
        "rm_score": {"mean": rm, "ci95": [rm - 0.1, rm + 0.1]},
        "kl_to_sft": kl,
        "per_family": {f: {"gold_score": gold + offset * i} for i, f in enumerate(FAMILIES)},
    }


@pytest.fixture
def policies() -> dict:
    """A smoke run's figures: every gold score under 0.15; sft, ppo and ppo_ptx at KL 0."""
    return {
        "base": _row(0.31, 0.041, -0.8, 2.1, 0.004),
        "sft": _row(0.5, 0.081, 0.1, 0.0, 0.01),
        "ppo": _row(0.52, 0.085, 0.15, 0.0, 0.012),
        "ppo_ptx": _row(0.49, 0.079, 0.12, 0.0, 0.015),
    }


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _texts(fig) -> list[Text]:
    fig.canvas.draw()
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def _overlapping(texts: list[Text]) -> list[tuple[str, str]]:
    renderer = texts[0].figure.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    return [(a, b) for (a, ba), (b, bb) in itertools.combinations(boxes, 2) if ba.overlaps(bb)]


def _labelled(ax) -> None:
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()


def _legend_clear_of(fig, legend, axes) -> None:
    fig.canvas.draw()
    box = legend.get_window_extent()
    for ax in axes:
        assert not box.overlaps(ax.get_window_extent()), f"the legend covers {ax.get_title()!r}"


def test_score_vs_kl_labels_do_not_collide_where_policies_share_kl_zero(policies):
    fig = plots.score_vs_kl_figure(policies)
    # every text of the figure (titles, axis labels, ticks, legend) stands on its own
    assert _overlapping(_texts(fig)) == []
    # each policy is named once, in a legend beside both panels rather than over them
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == list(policies)
    _legend_clear_of(fig, legend, fig.axes)
    for ax in fig.axes:
        _labelled(ax)
        assert "nats" in ax.get_xlabel()
    assert fig.get_suptitle()


def test_the_family_heatmap_spans_the_data_and_writes_each_value(policies):
    fig = plots.family_heatmap_figure(policies)
    ax = fig.axes[0]
    (image,) = ax.images
    values = [v["per_family"][f]["gold_score"] for v in policies.values() for f in FAMILIES]
    # the colours span the run's own range, not 0-1 (a smoke run's values are all < 0.15)
    assert image.get_clim() == pytest.approx((min(values), max(values)))
    # and every cell says its value
    written = {t.get_text() for t in ax.texts}
    assert {f"{v:.3f}" for v in values} <= written
    _labelled(ax)


def test_a_heatmap_of_one_value_still_has_a_colour_range(policies):
    for row in policies.values():
        row["per_family"] = {f: {"gold_score": 0.05} for f in FAMILIES}
    low, high = plots.family_heatmap_figure(policies).axes[0].images[0].get_clim()
    assert low < 0.05 < high


def test_the_win_rate_plot_marks_the_candidate_the_gate_judged(policies):
    fig = plots.win_rate_figure(policies, candidate="ppo_ptx")
    ax = fig.axes[0]
    fig.canvas.draw()
    ticks = ax.get_xticklabels()
    bold = [t.get_text() for t in ticks if t.get_fontweight() == "bold"]
    assert len(bold) == 1 and bold[0].startswith("ppo_ptx") and "candidate" in bold[0]
    hatched = [p.get_hatch() for p in ax.patches]
    assert hatched[list(policies).index("ppo_ptx")] and sum(map(bool, hatched)) == 1
    (legend,) = [ax.get_legend()]
    assert any("ppo_ptx" in t.get_text() for t in legend.get_texts())
    _legend_clear_of(fig, legend, [ax])
    _labelled(ax)


def test_the_win_rate_plot_without_a_candidate_marks_none(policies):
    ax = plots.win_rate_figure(policies).axes[0]
    assert not any(p.get_hatch() for p in ax.patches)
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        plots.SFT_TICK if name == "sft" else name for name in policies
    ]


def test_the_win_rate_plot_says_sfts_own_bar_is_sft_against_other_sft_samples(policies):
    # given the evaluation's rows, SFT's among them (its samples against SFT's reference
    # samples: 0.5 up to noise, which a bar at 0.54 beside the 0.5 line hid)
    ax = plots.win_rate_figure(policies, candidate="ppo").axes[0]
    # then SFT's tick says what its bar compares, and only SFT's
    ticks = {t.get_text().split("\n")[0]: t.get_text() for t in ax.get_xticklabels()}
    assert "vs other\nSFT samples" in ticks["sft"]
    assert all("SFT samples" not in text for name, text in ticks.items() if name != "sft")


def test_report_plots_writes_the_three_pngs(policies, tmp_path):
    paths = plots.report_plots(policies, tmp_path / "plots", candidate="ppo")
    assert [p.name for p in paths] == [
        "win_rate_vs_sft.png",
        "per_family_gold.png",
        "score_vs_kl.png",
    ]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)


def _curve() -> list[dict]:
    return [
        {"iteration": i, "kl": 0.01 * i**1.3, "rm": 0.1 + 0.05 * i, "gold": 0.08 + 0.004 * i - 0.0006 * i * i, "gold_se": 0.006}
        for i in range(9)
    ]  # fmt: skip


def test_the_overoptimisation_legend_covers_no_data(tmp_path):
    fig = curve_figure(_curve(), 5, "ppo: proxy vs gold reward")
    (legend,) = fig.legends
    assert len(legend.get_texts()) == 3  # RM, gold and the kept iteration
    _legend_clear_of(fig, legend, fig.axes)
    rm_axis, gold_axis = fig.axes
    _labelled(rm_axis)
    assert "nats" in rm_axis.get_xlabel() and gold_axis.get_ylabel()
    plot_curve(_curve(), 5, tmp_path / "curve.png", "t")
    assert (tmp_path / "curve.png").read_bytes().startswith(b"\x89PNG")


def test_the_report_gets_its_candidates_win_rate_plot_without_drawing_it_again(policies, tmp_path):
    """The evaluation draws a win-rate plot per possible candidate (the gate settles which
    later); the report copies its candidate's, and writing the report keeps it."""
    from instructflow.tasks.report import empty_report, to_markdown, write_report

    rows = {k: v for k, v in policies.items() if k != "ppo_ptx"}  # a dataset without pretrain
    drawn = plots.report_plots(rows, tmp_path / "eval", candidates=("ppo_ptx", "ppo", "sft"))
    assert [p.name for p in drawn] == [  # none for ppo_ptx, which these rows lack
        "win_rate_vs_sft-ppo.png",
        "win_rate_vs_sft-sft.png",
        "per_family_gold.png",
        "score_vs_kl.png",
    ]
    figures = plots.for_report(drawn, "ppo", tmp_path / "r1")
    assert [p.name for p in figures] == [
        "win_rate_vs_sft.png",
        "per_family_gold.png",
        "score_vs_kl.png",
    ]
    assert figures[0].read_bytes() == drawn[0].read_bytes()  # ppo's, copied
    report = empty_report({"mlflow_run_id": "r1"})
    run_dir = write_report(report, tmp_path, to_markdown(report), extra_files=figures)
    assert sorted(p.name for p in run_dir.glob("*.png")) == sorted(p.name for p in figures)


def _judged(win: float, kl: float) -> dict:
    """An evaluation row of a dataset run: the judge's win rate, no gold, no families."""
    return {
        "gold_score": None,
        "win_rate_vs_sft": {"mean": win, "ci95": [win - 0.1, win + 0.1]},
        "likert": None,
        "rm_score": {"mean": 0.05},
        "kl_to_sft": kl,
        "response_length": 2.0,
        "pretrain_perplexity": None,
    }


def test_a_dataset_run_plots_the_judges_win_rates_one_per_candidate(tmp_path):
    # given a dataset run's evaluation rows (no gold; the held-out judge's win rates)
    rows = {"base": _judged(0.56, 0.09), "sft": _judged(0.48, 0.0), "ppo": _judged(0.56, 0.01)}
    # when its plots are drawn
    drawn = plots.judged_plots(rows, tmp_path / "eval", ("ppo_ptx", "ppo", "sft"))
    # then each possible candidate has its win-rate plot, and nothing needing gold is drawn
    assert [p.name for p in drawn] == ["win_rate_vs_sft-ppo.png", "win_rate_vs_sft-sft.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in drawn)
    # and the plot says who judged: the held-out judge, not labelers a dataset does not have
    ax = plots.win_rate_figure(rows, "ppo", plots.JUDGE).axes[0]
    assert ax.get_title() == "Preferred over SFT by the held-out judge (test users, 95% CI)"
    _labelled(ax)
    # and one on a dataset split by prompt names what it held out
    ax = plots.win_rate_figure(rows, "ppo", plots.JUDGE, held_out="test prompts").axes[0]
    assert ax.get_title() == "Preferred over SFT by the held-out judge (test prompts, 95% CI)"
    # and the report takes the gate's candidate's, as on the embedded world
    assert [p.name for p in plots.for_report(drawn, "ppo", tmp_path / "r")] == [
        "win_rate_vs_sft.png"
    ]


def test_a_dataset_runs_plot_says_when_the_judge_is_untrusted(tmp_path, monkeypatch):
    # given a dataset run whose held-out judge got 7 of 15 held-out pairs right (below the
    # gate's floor: the report warns, and the gate does not act on the judge)
    rows = {"sft": _judged(0.5, 0.0), "ppo": _judged(0.6, 0.01)}
    metrics = {"judge/accuracy_heldout_pairs": 7 / 15, "judge/test_pairs": 15.0}
    caption = judge_trust.untrusted_caption(metrics)
    drawn_with = []
    original = plots.win_rate_figure
    monkeypatch.setattr(
        plots, "win_rate_figure", lambda *a, **k: drawn_with.append(fig := original(*a, **k)) or fig
    )
    # when the evaluation draws its plots with the judge's caption
    drawn = plots.judged_plots(rows, tmp_path / "eval", ("ppo", "sft"), caption)
    # then every win-rate plot is headed by it, in full, so the plot alone says so
    assert len(drawn) == len(drawn_with) == 2
    for fig in drawn_with:
        heading = fig.get_suptitle().replace("\n", " ")
        assert heading == caption
        assert "below floor 0.60" in heading and "on 15 held-out pairs" in heading
    # and a trusted judge's plot has no such heading
    trusted = {"judge/accuracy_heldout_pairs": 0.8, "judge/test_pairs": 400.0}
    assert judge_trust.untrusted_caption(trusted) is None
    assert plots.win_rate_figure(rows, "ppo", plots.JUDGE, None).get_suptitle() == ""


def test_a_dataset_run_without_judge_verdicts_has_no_plot(tmp_path):
    rows = {"sft": _judged(0.5, 0.0) | {"win_rate_vs_sft": None}}
    assert plots.judged_plots(rows, tmp_path / "eval", ("ppo", "sft")) == []


def test_the_embedded_worlds_win_rate_plot_is_still_the_labelers(policies):
    ax = plots.win_rate_figure(policies).axes[0]
    assert ax.get_title() == "Preferred over SFT by held-out labelers (test users, 95% CI)"


def test_a_dataset_runs_curve_title_promises_no_gold():
    points = [p | {"gold": float("nan"), "gold_se": float("nan")} for p in _curve()]
    assert curve_title("ppo", _curve()) == "ppo: proxy vs gold reward"
    assert curve_title("ppo", points) == (
        "ppo: proxy (RM) reward against KL (no gold score on a dataset)"
    )


def test_a_dataset_run_without_gold_has_no_empty_gold_axis():
    points = [p | {"gold": float("nan"), "gold_se": float("nan")} for p in _curve()]
    fig = curve_figure(points, 0, "ppo: proxy vs gold reward")
    assert len(fig.axes) == 1  # the RM axis only
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "validation RM score (proxy)",
        "kept: iteration 0",
    ]
    _legend_clear_of(fig, legend, fig.axes)


def test_seven_policies_fit_the_win_rate_plot_without_colliding_labels():
    from instructflow.tasks.report import POLICY_NAMES

    seven = {name: _row(0.5, 0.01, 0.0, 0.0, 0.0) for name in POLICY_NAMES}
    for candidate in (None, "ppo_ptx"):
        fig = plots.win_rate_figure(seven, candidate)
        assert _overlapping(_texts(fig)) == []
        plt.close(fig)
