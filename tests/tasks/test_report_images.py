"""The Prefect artifact `rlhf-report` and the MLflow run's report/report.md show their plots
from the MLflow server; report.md on disk keeps file names, which resolve beside its PNGs."""

import re
from pathlib import Path
from urllib.parse import urlsplit

import mlflow
import pytest

from instructflow.tasks.report import (
    empty_report,
    log_report,
    mlflow_artifact_urls,
    to_markdown,
)

PLOTS = ["/runs/abc/win_rate_vs_sft.png", "/runs/abc/per_family_gold.png"]
RUN_URL = "http://127.0.0.1:5000/#/experiments/3/runs/abc123?workflowType=machine_learning"


def _report() -> dict:
    return empty_report({"mlflow_run_id": "abc123"})


def test_report_md_shows_its_plots_by_file_name():
    text = to_markdown(_report(), RUN_URL, PLOTS)
    assert "![win_rate_vs_sft](win_rate_vs_sft.png)" in text
    assert "![per_family_gold](per_family_gold.png)" in text


def test_the_prefect_artifact_shows_its_plots_from_the_mlflow_run_artifacts():
    text = to_markdown(_report(), RUN_URL, PLOTS, mlflow_artifact_urls(RUN_URL, "report"))
    assert (
        "![win_rate_vs_sft](http://127.0.0.1:5000/get-artifact"
        "?path=report%2Fwin_rate_vs_sft.png&run_uuid=abc123)"
    ) in text
    assert "](per_family_gold.png)" not in text and "](win_rate_vs_sft.png)" not in text
    # the run link itself is unchanged
    assert f"MLflow run: [{RUN_URL}]({RUN_URL})" in text


def test_a_ui_under_a_path_prefix_keeps_it():
    url = mlflow_artifact_urls("https://ml.example/mlflow/#/experiments/1/runs/r9/", "report")
    assert url("a.png") == "https://ml.example/mlflow/get-artifact?path=report%2Fa.png&run_uuid=r9"


def test_the_mlflow_server_serves_the_png_at_that_url(tmp_path, monkeypatch):
    # given a run with a report folder logged as the pipeline logs it
    from mlflow.server import app, handlers
    from mlflow.tracking._tracking_service.utils import _get_store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    folder = tmp_path / "report"
    folder.mkdir()
    png = b"\x89PNG\r\n\x1a\n-not-really-a-png"
    (folder / "win_rate_vs_sft.png").write_bytes(png)
    exp = mlflow.create_experiment("images", artifact_location=str(tmp_path / "artifacts"))
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.log_artifacts(str(folder), artifact_path="report")
    monkeypatch.setattr(handlers, "_tracking_store", _get_store(uri))
    # when the browser asks the tracking server for the artifact markdown's image URL
    image = mlflow_artifact_urls(
        f"http://127.0.0.1:5000/#/experiments/{exp}/runs/{run.info.run_id}", "report"
    )
    split = urlsplit(image("win_rate_vs_sft.png"))
    response = app.test_client().get(f"{split.path}?{split.query}")
    # then it gets the file, as an image (an <img> ignores the attachment disposition)
    assert response.status_code == 200, response.data[:300]
    assert response.data == png
    assert response.mimetype == "image/png"


@pytest.mark.parametrize("url", [RUN_URL, RUN_URL + "/"])
def test_the_run_id_comes_from_the_run_link(url):
    assert mlflow_artifact_urls(url, "report")("x.png").endswith("run_uuid=abc123")


# MLflow 3.17's Markdown preview (an artifact's "M" view) shows an image only when its URL
# has a scheme; a bare file name is printed as the text `[alt](name.png)`
# (mlflow/server/js: the `img` renderer's /^[a-z][a-z0-9+.-]*:/i test).
MLFLOW_SHOWS_IMAGE = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)


def test_the_report_md_in_mlflow_shows_its_plots_and_the_one_on_disk_keeps_file_names(
    tmp_path, monkeypatch
):
    # given a run's report folder as the pipeline writes it (report.md beside its PNGs)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    folder = tmp_path / "reports" / "abc123"
    folder.mkdir(parents=True)
    for plot in PLOTS:
        (folder / Path(plot).name).write_bytes(b"\x89PNG\r\n\x1a\n")
    on_disk = to_markdown(_report(), RUN_URL, PLOTS)
    (folder / "report.md").write_text(on_disk)
    exp = mlflow.create_experiment("reports", artifact_location=str(tmp_path / "artifacts"))
    # when it is logged to the run's MLflow artifacts
    with mlflow.start_run(experiment_id=exp) as run:
        url = f"http://127.0.0.1:5000/#/experiments/{exp}/runs/{run.info.run_id}"
        log_report(folder, _report(), url, PLOTS)
    logged = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="report", dst_path=str(tmp_path / "got")
        )
    )
    # then every file is there, and the report.md MLflow shows links each plot by a URL
    # with a scheme (the tracking server's get-artifact of that run), so MLflow draws it
    assert sorted(p.name for p in logged.iterdir()) == sorted(
        ["report.md", *(Path(p).name for p in PLOTS)]
    )
    images = re.findall(r"!\[[^\]]*\]\(([^)]*)\)", (logged / "report.md").read_text())
    assert len(images) == len(PLOTS), images
    for image in images:
        assert MLFLOW_SHOWS_IMAGE.match(image), image
        assert image.endswith(f"run_uuid={run.info.run_id}"), image
    # and the report.md on disk still names its PNGs beside it
    assert (folder / "report.md").read_text() == on_disk


FIGURES = [
    "win_rate_vs_sft",
    "judge_win_rate_vs_sft",
    "gold_score",
    "likert",
    "rm_score",
    "kl_to_sft",
    "response_length",
    "public_suite_accuracy",
    "pretrain_perplexity",
]


def _policy_headers(markdown: str) -> list[list[str]]:
    """The column names of each policy table in `markdown`."""
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in markdown.splitlines()
        if line.startswith("| policy |")
    ]


def test_the_prefect_artifact_splits_the_policy_table_and_mlflow_keeps_it_whole(
    tmp_path, monkeypatch
):
    # given a run's report with every figure for two policies
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    report = _report()
    ci = {"mean": 0.512, "ci95": [0.431, 0.593]}
    report["policies"] = {name: dict.fromkeys(FIGURES, ci) for name in ("sft", "ppo")}
    folder = tmp_path / "reports" / "abc123"
    folder.mkdir(parents=True)
    exp = mlflow.create_experiment("reports", artifact_location=str(tmp_path / "artifacts"))
    # when it is logged, and its Prefect artifact's Markdown made
    with mlflow.start_run(experiment_id=exp) as run:
        url = f"http://127.0.0.1:5000/#/experiments/{exp}/runs/{run.info.run_id}"
        artifact = log_report(folder, report, url, [])
    logged = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/report/report.md")
    # then the artifact's policy tables are narrow, and together have every figure once,
    # each with both policies' rows
    headers = _policy_headers(artifact)
    assert len(headers) > 1
    assert all(len(header) <= 6 for header in headers), headers
    assert [c for header in headers for c in header if c != "policy"] == FIGURES
    assert artifact.count("| ppo | 0.512 [0.431, 0.593] |") == len(headers)
    # and MLflow's report.md (and the one on disk) keeps the one table of every column
    assert _policy_headers(logged) == [["policy", *FIGURES]]
    assert _policy_headers(to_markdown(report)) == [["policy", *FIGURES]]
