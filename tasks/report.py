"""The run report: report.json (the contract every stage fills) and report.md.

Written to reports/<mlflow run id>/ after the evaluation; copied to
reports/latest/ only when the run completes (instructflow.tasks.run_status), then logged
to the MLflow parent run. A failed run's folder says where it stopped.
"""

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from instructflow.tasks.dataset_report import dataset_markdown
from instructflow.tasks.fewshot_shown import shortfall_text
from instructflow.tasks.gate import short_answers
from instructflow.tasks.model_card import TRAINING_READINGS, played
from instructflow.tasks.report_judge import judge_caveat, judge_section
from instructflow.tasks.report_training import training_lines
from instructflow.tasks.splits import held_out_group
from instructflow.tasks.stage_notes import MEASURES

POLICY_NAMES = ["base", "base_fewshot", "flan", "t0", "sft", "ppo", "ppo_ptx"]


def empty_report(run: dict[str, Any]) -> dict[str, Any]:
    """The report skeleton: stages fill `labelers`, `reward_model`, `judge`, `policies` and `gate`."""
    return {
        "run": run,
        "labelers": {},
        "reward_model": {},
        "judge": {},
        "policies": {},
        "gate": None,
    }


def _fmt(value: Any) -> str:
    if isinstance(value, dict) and "mean" in value:
        text = _fmt(value["mean"])
        if value.get("ci95"):
            lo, hi = value["ci95"]
            text += f" [{lo:.3f}, {hi:.3f}]"
        return text
    if isinstance(value, dict):
        return ", ".join(f"{key} {_fmt(item)}" for key, item in value.items())
    if isinstance(value, float):
        return f"{value:.3f}"
    return "-" if value is None else str(value)


def _held_out(report: dict[str, Any]) -> str:
    return held_out_group((report.get("dataset") or {}).get("split_rule"))


# The policy table's columns: the preference figures (with CIs), then the other measures.
# report.md has them in one table; the Prefect artifact, whose pane is narrower than ten
# such columns, one table per group.
POLICY_COLUMN_GROUPS = (
    ("win_rate_vs_sft", "judge_win_rate_vs_sft", "gold_score", "likert"),
    ("rm_score", "kl_to_sft", "response_length", "public_suite_accuracy", "pretrain_perplexity"),
)


def in_pipeline_order(policies: dict[str, dict]) -> list[str]:
    """The pipeline's policies in its order, then any other (a dataset's, say)."""
    return [n for n in POLICY_NAMES if n in policies] + [
        n for n in policies if n not in POLICY_NAMES
    ]


def _policy_table(policies: dict[str, dict], columns: tuple[str, ...]) -> list[str]:
    """One row per policy (the pipeline's order, then any other), the given columns."""
    # A column no policy has a figure in (gold on a dataset) says nothing.
    columns = tuple(c for c in columns if any(r.get(c) is not None for r in policies.values()))
    if not columns:
        return []
    lines = ["| policy | " + " | ".join(columns) + " |", "|" + " --- |" * (len(columns) + 1)]
    return lines + [
        f"| {name} | " + " | ".join(_fmt(policies[name].get(c)) for c in columns) + " |"
        for name in in_pipeline_order(policies)
    ]


def _column_units(policies: dict[str, dict]) -> list[str]:
    """Under the policy tables, what each column measures and in which unit or scale."""
    shown = [c for c in sum(POLICY_COLUMN_GROUPS, ()) if c in MEASURES]
    shown = [c for c in shown if any(r.get(c) is not None for r in policies.values())]
    return (
        ["", "Columns: " + "; ".join(f"`{c}`: {MEASURES[c]}" for c in shown) + "."] if shown else []
    )


def _gate_lines(gate: dict[str, Any]) -> list[str]:
    """The promotion gate's decision, first in report.md: what a reader comes for."""
    verdict = "promoted to champion" if gate.get("promoted") else "not promoted"
    if gate.get("awaiting_approval"):
        verdict = "passed, awaiting a person's approval"
    # The gate samples both sides afresh (embedded world) and so differs from the policy
    # table's figure for the same pair: say which figure this is.
    source = (
        "the gate's own head-to-head, both sampled afresh"
        if gate.get("prompts") is not None
        else "the evaluation's"
    )
    source = "people's rankings" if gate.get("evidence") == "human" else source
    lines = ["## Promotion gate", ""]
    lines += [
        f"- {gate['model_name']} v{gate.get('policy_version', '?')} ({gate.get('candidate', '?')}): "
        f"**{verdict}**",
        f"- played: {played(gate)}",
        f"- win rate: {_fmt(gate['win_rate'])} ({source})",
        f"- reason: {gate['reason']}",
    ]
    if answer := gate.get("approval"):  # the gate passed; a person (or the timeout) decided
        lines.append(
            f"- approval: {answer['decision']} by {answer['reviewer']}: {answer['reason']}"
        )
    if automatic := gate.get("automatic"):  # people's rankings decided again
        lines.append(f"- before people's rankings: {automatic['reason']}")
    if gate.get("champion") is not None:
        lines.append(f"- champion now: v{gate['champion']}")
    if gate.get("note"):
        lines.append(f"- note: {gate['note']}")
    if gate.get("candidate_note"):
        lines.append(f"- candidate: {gate['candidate_note']}")
    if gate.get("note_registered"):
        lines.append(f"- registered: {gate['note_registered']}")
    return lines + [""]


def _flow_run_lines(report: dict[str, Any]) -> list[str]:
    """A link to the run's Prefect flow run (its logs, task runs and artifacts), if it had one."""
    from instructflow.tasks import env

    flow_run_id = (report.get("run") or {}).get("prefect_flow_run_id")
    if not flow_run_id:
        return []
    url = env.prefect_flow_run_url(flow_run_id)
    return [f"Prefect flow run (logs, task runs): [{flow_run_id}]({url})", ""]


def run_summary(report: dict[str, Any]) -> str:
    """The parent MLflow run's description (its Overview page): the status, the gate's
    decision, the candidate's figures, and where the whole report is."""
    lines = [f"Status: **{report.get('status', '?')}**", ""]
    gate = report.get("gate") or {}
    if gate:
        lines += _gate_lines(gate)
    row = report.get("policies", {}).get(gate.get("candidate"))
    if row:
        figures = ("gold_score", "win_rate_vs_sft", "judge_win_rate_vs_sft", "kl_to_sft")
        shown = [f"{k} {_fmt(row[k])}" for k in figures if row.get(k) is not None]
        lines += [f"Candidate {gate['candidate']} on {_held_out(report)}: " + "; ".join(shown), ""]
    lines += _flow_run_lines(report)
    lines.append("The whole report: this run's artifacts, `report/report.md`.")
    return "\n".join(lines) + "\n"


def _run_lines(run: dict[str, Any]) -> list[str]:
    """The run block: its fields, then each stage's seconds, whether Prefect served it from
    its cache, and its cache key, in one table."""
    lines = ["## Run", "", "| field | value |", "| --- | --- |"]
    in_table = ("cached_stages",)  # the stage table's column, not a field of its own
    lines += [
        f"| {k} | `{v}` |" for k, v in run.items() if not isinstance(v, dict) and k not in in_table
    ]
    seconds, keys = run.get("stage_seconds") or {}, dict(run.get("stage_keys") or {})
    # stage_keys is by policy: base and base_fewshot are the base_model stage's output
    # (`base_model-<hash>`), so that stage's row gets the key, not two rows of their own.
    for stage in seconds:
        made = [name for name, key in keys.items() if key.rsplit("-", 1)[0] == stage]
        if stage not in keys and made:
            keys[stage] = keys[made[0]]
            keys = {name: key for name, key in keys.items() if name not in made}
    lines += _settings_lines(run)
    if seconds or keys:
        lines += ["", "| stage | seconds | cache key |", "| --- | --- | --- |"]
        lines += [
            f"| {stage} | {_stage_seconds(run, stage)} | {f'`{keys[stage]}`' if stage in keys else '-'} |"
            for stage in [*seconds, *(k for k in keys if k not in seconds)]
        ]
    return lines


def _stage_seconds(run: dict[str, Any], stage: str) -> str:
    """A stage's seconds, marked `(cached)` where Prefect served it from its cache: those
    seconds are the look-up's, not the training's (run.cached_stages; a report from before
    it was recorded says nothing either way)."""
    seconds = (run.get("stage_seconds") or {}).get(stage)
    if seconds is None:
        return "-"
    return f"{seconds:.1f}" + (" (cached)" if stage in (run.get("cached_stages") or ()) else "")


def _settings_lines(run: dict[str, Any]) -> list[str]:
    """The settings the run set away from its profile's defaults (`run.settings`), if known."""
    settings = run.get("settings")
    if settings is None:  # a report of an older version, or of a run that failed early
        return []
    if not settings:
        return ["", f"Settings: the {run.get('profile', '?')} profile's defaults (none set)."]
    lines = ["", "| setting you set | value |", "| --- | --- |"]
    return lines + [f"| {name} | `{json.dumps(value)}` |" for name, value in settings.items()]


def mlflow_artifact_urls(run_url: str, folder: str) -> Callable[[str], str]:
    """Where a browser fetches a file of `folder` in the run's artifacts, by file name, from
    the run's MLflow UI link (`<ui>/#/experiments/<id>/runs/<run id>`): the tracking server's
    /get-artifact route (mlflow.server: `path`, `run_uuid`). For the Prefect UI's report, which
    cannot resolve report.md's file names beside it."""
    base, _, route = run_url.partition("/#/")
    run_id = route.partition("?")[0].rstrip("/").rsplit("/runs/", 1)[-1]
    return lambda name: (
        f"{base.rstrip('/')}/get-artifact?"
        + urlencode({"path": f"{folder}/{name}", "run_uuid": run_id})
    )


def to_markdown(
    report: dict[str, Any],
    mlflow_url: str | None = None,
    plots: list[str] | None = None,
    image_url: Callable[[str], str] | None = None,
    narrow: bool = False,
) -> str:
    """report.md: the decision and the figures first; where and how the run was made last.

    Each plot is shown by its file name (report.md lies beside its PNGs) or, given
    `image_url` (file name -> URL, e.g. mlflow_artifact_urls), by that URL.
    `narrow`: the policy table as one table per POLICY_COLUMN_GROUPS (the Prefect artifact).
    """
    run = report["run"]
    lines = [f"# instructflow run `{run.get('mlflow_run_id', '?')}`", ""]
    if report.get("status"):
        lines += [f"Status: **{report['status']}**", ""]
    if mlflow_url:
        lines += [f"MLflow run: [{mlflow_url}]({mlflow_url})", ""]
    lines += _flow_run_lines(report)
    if report.get("gate"):
        lines += _gate_lines(report["gate"])
        if warning := short_answers(report["policies"], report["gate"].get("candidate", "")):
            lines += [f"> **Warning:** {warning}.", ""]
    if report["policies"]:
        # On a user's dataset there are no simulated labelers: win_rate_vs_sft is the judge's.
        judged_by = "held-out judge" if report.get("dataset") else "held-out labelers"
        lines += [f"## Policies ({_held_out(report)}, {judged_by}; 95% bootstrap CI)", ""]
        lines += judge_caveat(report)
        for group in POLICY_COLUMN_GROUPS if narrow else [sum(POLICY_COLUMN_GROUPS, ())]:
            table = _policy_table(report["policies"], group)
            lines += ([""] if table and lines[-1] else []) + table  # a blank line between tables
        lines += _column_units(report["policies"])
        if shortfall := report.get("fewshot_shortfall"):  # base_fewshot's row measures fewer
            lines += ["", f"Note: {shortfall_text(shortfall)}."]
    if report.get("labelers"):  # a dataset run has no labelers block
        lines += [
            "",
            f"Labeler pairwise agreement: **{_fmt(report['labelers'].get('pairwise_agreement'))}**",
        ]
    if report["reward_model"]:
        lines += ["", "## Reward model", ""]
        # A dataset run's block has the RM's training readings too: shown once, under Training.
        shown = TRAINING_READINGS if report.get("training") else ()
        lines += [f"- {k}: {_fmt(v)}" for k, v in report["reward_model"].items() if k not in shown]
    if report.get("judge"):
        lines += judge_section(report, _fmt)
    human = report.get("human_eval")
    if human:
        lines += ["", f"## Human evaluation ({human['items']} prompts, `{human['file']}`)", ""]
        lines += ["| policy | win rate vs sft | Likert |", "| --- | --- | --- |"]
        for name, row in human["policies"].items():
            lines.append(f"| {name} | {_fmt(row.get('win_rate_vs_sft'))} | {_fmt(row['likert'])} |")
    for plot in plots or []:
        name = Path(plot).name
        lines += ["", f"![{Path(plot).stem}]({image_url(name) if image_url else name})"]
    lines += training_lines(report, _fmt)
    lines += ["", *_run_lines(run)]
    if report.get("provenance"):
        lines += ["", "## Where it was made", "", "| field | value |", "| --- | --- |"]
        lines += [
            f"| {k} | `{' '.join(v) if isinstance(v, list) else v}` |"
            for k, v in report["provenance"].items()
        ]
    return "\n".join(lines) + "\n"


def report_markdown(
    report: dict[str, Any],
    mlflow_url: str | None = None,
    plots: list[str] | None = None,
    image_url: Callable[[str], str] | None = None,
    narrow: bool = False,
) -> str:
    """A run's whole report.md: to_markdown's sections, then a dataset run's Dataset section.

    The one renderer of a run's report.md, for the pipeline and for `eval import`, which
    rewrites it: a second one would drift (the rewrite once lost the Dataset section).
    """
    dataset = dataset_markdown(report) if report.get("dataset") else ""
    return to_markdown(report, mlflow_url, plots, image_url, narrow) + dataset


def log_report(
    run_dir: Path, report: dict[str, Any], mlflow_url: str, plots: list[str], extra: str = ""
) -> str:
    """Log `run_dir` (report.json, report.md, its plots) to the active MLflow run's `report/`,
    with a report.md that links each plot by its MLflow URL; return that Markdown (+ `extra`).

    Neither MLflow's Markdown preview nor Prefect's artifact resolves a file name beside
    report.md (MLflow 3.17 prints such an image as the text `[alt](name.png)`): both are
    given the tracking server's URLs. reports/<run id>/report.md keeps the file names.

    Returns the Markdown of the run's Prefect artifact: the same, with its policy table
    split in narrower ones (`narrow`), as the Prefect UI's pane is narrower than ten columns.
    """
    import mlflow

    from instructflow.tasks import outages
    from instructflow.tasks.tracking import tracking_uri

    image_url = mlflow_artifact_urls(mlflow_url, "report")
    web = report_markdown(report, mlflow_url, plots, image_url) + extra
    # the run is complete and its registry written: a restarted server is worth waiting for
    why = "the run's report is logged there"
    outages.wait_if_not_answering("the MLflow tracking server", tracking_uri(), why)
    mlflow.log_artifacts(str(run_dir), artifact_path="report")
    mlflow.log_text(web, "report/report.md")
    return report_markdown(report, mlflow_url, plots, image_url, narrow=True) + extra


def write_whole(path: Path, text: str) -> None:
    """`text` into `path` through a temporary file and one rename, so that a write that fails
    (a full disk) leaves the file as it was or absent, never cut short; the error names `path`
    (a failed write() names no file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.filename in (None, str(tmp)):
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def write_report(
    report: dict[str, Any], reports_root: Path, markdown: str, extra_files: list[Path] | None = None
) -> Path:
    """Write reports/<run id>/ (reports/latest/ moves only when the run completes: `publish_latest`)."""
    run_dir = reports_root / report["run"]["mlflow_run_id"]
    run_dir.mkdir(parents=True, exist_ok=True)
    write_whole(run_dir / "report.json", json.dumps(report, indent=2, sort_keys=False) + "\n")
    write_whole(run_dir / "report.md", markdown)
    for file in extra_files or []:
        if Path(file).resolve() != (run_dir / file.name).resolve():  # not drawn in place
            shutil.copy2(file, run_dir / file.name)
    return run_dir


def publish_latest(run_dir: Path, reports_root: Path) -> None:
    """Point reports/latest at a completed run's folder: a symlink swapped by one rename.

    The rename is atomic, so a reader never sees a half-written latest and two
    runs finishing together leave latest on one of them, never on a mix.
    """
    latest = reports_root / "latest"
    if latest.is_dir() and not latest.is_symlink():  # a copy written by an older version
        shutil.rmtree(latest)
    tmp = reports_root / f".latest-{run_dir.name}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_dir.name)
    os.replace(tmp, latest)
