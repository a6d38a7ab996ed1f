"""The users' path through the two UIs, in a real browser, on the `make serve` stack.

Prefect UI: deployment manual-run, Custom run, the parameter form filled in
(profile smoke, seed 1, the reduced fast-smoke sizes in the nested stage
sections), submitted, followed until Completed, its task runs named by stage, its report
artifact opened (its plots loaded from the MLflow server), its policies table (every
header in sight at 1400 px, report.json's figures with their CIs); the scheduled-retrain
deployment with its next run. MLflow UI: the experiment in the model-training
layout, the parent run (named as its flow run, its Overview saying the outcome)
with its nested stage runs (the reward model's Overview describing the stage, its
markdown rendered) and a report plot, and the registered policy with
its aliases where the registry puts them.

The Custom Run asks for what live_manual_run (tests/conftest.py) already ran
through the API, so every stage is served from Prefect's cache and the run
costs about half a minute; a form that sent other values would re-train.
Each step saves a screenshot (docs/screenshots/ under `make screenshots`).
"""

import datetime as dt
import json
import re
import time
from pathlib import Path

import mlflow
import pytest
from cronsim import CronSim
from mlflow import MlflowClient
from playwright.sync_api import expect

from instructflow.flows.params import PipelineParams
from instructflow.tasks import report_table, tracking
from tests.browser import prefect_form
from tests.flows.stages import STAGES

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RUN_NAME = "custom-run-from-the-form"
STAGE_CONFIGS = [
    "base",
    "sft",
    "baselines",
    "comparisons",
    "reward_model",
    "ppo",
    "evaluation",
    "gate",
]


def shot(page, folder, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"))


def dismiss_mlflow_popups(page) -> None:
    """MLflow greets a new browser with a modal about its new registry UI and its
    Assistant's chat panel (whenever it likes: handlers close them before any action or
    assertion; the panel took a quarter of every screenshot) and a tour tip."""
    modal = page.get_by_role("dialog").filter(has_text="new Model Registry UI")
    page.add_locator_handler(
        modal, lambda found: found.get_by_role("button", name="Try it now").click()
    )
    # A click event, not a pointer's click: the registry modal's overlay may cover the panel.
    assistant = page.locator('button[data-component-id="mlflow.assistant.chat_panel.close"]')
    page.add_locator_handler(assistant, lambda found: found.dispatch_event("click"))
    button = page.get_by_role("button", name="Got it", exact=True)
    if button.count() and button.first.is_visible():
        button.first.click()


def _flow_run_named(live_stack, name: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        found = live_stack.request(
            "POST", "/flow_runs/filter", json={"flow_runs": {"name": {"any_": [name]}}}
        ).json()
        if found or time.monotonic() > deadline:
            assert len(found) == 1, found
            return found[0]["id"]
        time.sleep(1)


def policy_model(params: dict) -> str:
    """The registered model a run's policy joins (the smoke profile has its own)."""
    parsed = PipelineParams(**params)
    return parsed.registry.names(parsed.profile)[0]


def _policies_table(page, live_stack, flow_run_id: str) -> dict:
    """The flow run's `rlhf-policies` artifact as the UI shows it: headers, cells, its
    description, and how far its pane scrolls sideways (0: every column in sight)."""
    page.goto(f"{live_stack.prefect_url}/runs/flow-run/{flow_run_id}")
    page.get_by_text("Artifacts", exact=True).first.click()
    page.get_by_text("rlhf-policies", exact=True).first.click()
    table = page.locator(".p-table")
    expect(table.locator("td").first).to_be_visible()
    return {
        "headers": [h.strip() for h in table.locator("th").all_inner_texts()],
        "cells": [c.strip() for c in table.locator("td").all_inner_texts()],
        "overflow": table.evaluate("pane => pane.scrollWidth - pane.clientWidth"),
        "text": page.locator("main, body").first.inner_text(),
    }


@pytest.fixture(scope="module")
def form_run(live_stack, live_manual_run, chromium, screenshots, fast_smoke) -> dict:
    """A Custom Run of manual-run made through the Prefect UI's form, followed to its end."""
    assert live_manual_run["flow_run"]["state"]["type"] == "COMPLETED", live_stack.logs(
        live_manual_run["id"]
    )
    wanted = fast_smoke(seed=1)
    context = chromium.new_context(
        viewport={"width": 1400, "height": 900}, locale="en-US", timezone_id="UTC"
    )
    context.set_default_timeout(60_000)
    page = context.new_page()
    try:
        page.goto(f"{live_stack.prefect_url}/deployments")
        page.get_by_role("link", name="manual-run", exact=True).first.click()
        expect(page.get_by_role("button", name="Run", exact=True)).to_be_visible()
        shot(page, screenshots, "01-prefect-deployment-manual-run")

        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_text("Custom run", exact=True).click()
        form = page.locator("form")
        page.locator("form input").first.fill(RUN_NAME)
        params = prefect_form.field(form, "params")
        prefect_form.fill(params, wanted)
        prefect_form.field(params, "Profile").scroll_into_view_if_needed()
        page.mouse.wheel(0, -400)
        shot(page, screenshots, "02-prefect-custom-run-form")
        ppo = prefect_form.field(params, "Ppo")
        prefect_form.field(ppo, "Iterations").scroll_into_view_if_needed()
        shot(page, screenshots, "03-prefect-custom-run-form-nested")

        page.get_by_role("button", name="Submit", exact=True).click()
        # The UI leaves the form once the run is created (a rejected form stays, with its errors).
        # Creating it is a write to the server's SQLite database: on a loaded machine (a
        # clean-clone run with other test processes beside it) that took over 60 s once.
        page.wait_for_url(lambda url: not url.split("?")[0].endswith("/run"), timeout=180_000)
        flow_run_id = _flow_run_named(live_stack, RUN_NAME)
        page.goto(f"{live_stack.prefect_url}/runs/flow-run/{flow_run_id}")
        badge = page.locator(".state-badge").first
        expect(badge).to_have_text(
            re.compile("Completed|Failed|Crashed|Cancelled"), timeout=600_000
        )
        state = badge.inner_text().strip()
        # Its task runs are named by stage (they were sft-<hash>, FLAN and T0 too).
        page.get_by_text("Task Runs", exact=True).first.click()
        task_runs = page.locator(".task-run-list-item a")
        expect(task_runs.get_by_text("ppo_ptx", exact=True)).to_be_visible()
        task_run_names = task_runs.all_inner_texts()
        shot(page, screenshots, "04-prefect-flow-run-completed")

        page.get_by_text("Artifacts", exact=True).first.click()
        page.get_by_text("rlhf-report", exact=True).click()
        expect(page.get_by_text("MLflow run:")).to_be_visible()
        report_text = page.locator("main, body").first.inner_text()
        # Its plots come from the MLflow server: wait until each has loaded or failed.
        page.wait_for_function(
            "() => document.images.length > 0 && [...document.images].every(i => i.complete)"
        )
        report_images = page.evaluate(
            "() => [...document.images].map(i => ({src: i.src, width: i.naturalWidth}))"
        )
        shot(page, screenshots, "05-prefect-report-artifact")
        policies_table = _policies_table(page, live_stack, flow_run_id)
        shot(page, screenshots, "15-prefect-policies-artifact")
    except Exception:
        shot(page, screenshots, "failed-form-run")
        raise
    finally:
        context.close()
    return {
        "id": flow_run_id,
        "state": state,
        "wanted": wanted,
        "report_text": report_text,
        "report_images": report_images,
        "policies_table": policies_table,
        "task_run_names": task_run_names,
    }


def test_the_form_run_completes_with_the_parameters_typed_in(live_stack, form_run):
    # given the flow run the form created
    run = live_stack.request("GET", f"/flow_runs/{form_run['id']}").json()
    # then it completed, as the UI showed
    assert form_run["state"] == "Completed", live_stack.logs(form_run["id"])
    assert run["state"]["type"] == "COMPLETED"
    assert run["name"] == RUN_NAME
    # and its parameters are the ones typed into the form (the form also sends
    # the defaults it shows; what each stage receives must be the same)
    sent = PipelineParams(**run["parameters"]["params"])
    wanted = PipelineParams(**form_run["wanted"])
    assert (sent.profile, sent.seed) == ("smoke", 1)
    for name in STAGE_CONFIGS:
        assert sent.stage(name) == wanted.stage(name), name


def test_the_report_artifact_links_to_the_mlflow_run(live_stack, form_run):
    # given the report artifact the UI showed
    text = form_run["report_text"]
    # then it names this flow run, its profile and seed, and links to the MLflow run
    assert form_run["id"] in text
    assert re.search(
        rf"MLflow run: {re.escape(live_stack.mlflow_url)}/#/experiments/\d+/runs/\w+", text
    )
    assert "ppo_ptx" in text


def test_the_report_artifact_shows_its_plots_from_the_mlflow_server(live_stack, form_run):
    # given the images of the report artifact the Prefect UI showed
    _, parent_id = _parent_run_id(live_stack, form_run["id"])
    images = form_run["report_images"]
    # then each is a plot of the parent run, from the MLflow server's get-artifact,
    # and the browser loaded it (a broken image has naturalWidth 0)
    prefix = f"{live_stack.mlflow_url}/get-artifact?path=report%2F"
    assert {"win_rate_vs_sft.png", "score_vs_kl.png"} <= {
        i["src"].removeprefix(prefix).split("&")[0] for i in images
    }, images
    for image in images:
        assert image["src"].startswith(prefix), image
        assert image["src"].endswith(f"&run_uuid={parent_id}"), image
        assert image["width"] > 100, image


def test_the_policies_artifact_shows_the_reports_figures_whole(live_stack, form_run, tmp_path):
    # given the policies table the Prefect UI showed, and the run's report.json
    shown = form_run["policies_table"]
    _, parent_id = _parent_run_id(live_stack, form_run["id"])
    path = mlflow.artifacts.download_artifacts(
        run_id=parent_id,
        artifact_path="report/report.json",
        tracking_uri=live_stack.mlflow_url,
        dst_path=str(tmp_path),
    )
    expected = report_table.table_rows(json.loads(Path(path).read_text()))
    # then every header is in sight at 1400 px: the pane does not scroll sideways
    assert shown["headers"] == list(expected[0]), shown
    assert shown["overflow"] <= 0, shown
    # and each policy's figures are report.json's, each mean [95% CI]
    assert shown["cells"] == [cell for row in expected for cell in row.values()], shown
    assert any(re.fullmatch(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", c) for c in shown["cells"])
    # and the description says where the other measures are
    assert f"reports/{parent_id}/report.json" in shown["text"], shown["text"]


def test_the_flow_run_lists_its_task_runs_by_stage(form_run):
    # given the names the flow run's Task Runs tab showed
    names = set(form_run["task_run_names"])
    # then each stage's task run is named by its stage, PPO-ptx, FLAN and T0 included
    for stage in ("data", "sft", "flan", "t0", "ppo", "ppo_ptx", "evaluation", "registry"):
        assert stage in names, names


def test_scheduled_retrain_shows_its_next_run(live_stack, page, screenshots):
    # given the deployments page
    page.goto(f"{live_stack.prefect_url}/deployments")
    # when a user opens scheduled-retrain and its upcoming runs
    page.get_by_role("link", name="scheduled-retrain", exact=True).first.click()
    page.get_by_text("Upcoming", exact=True).first.click()
    # then the weekly schedule and the next Monday 03:00 UTC are shown
    expect(page.get_by_text("At 03:00 AM, only on Monday")).to_be_visible()
    now = dt.datetime.now(dt.UTC)
    next_run = next(CronSim("0 3 * * 1", now))
    expect(page.get_by_text(f"Scheduled for {next_run:%Y/%m/%d %I:%M:%S %p}").first).to_be_visible()
    shot(page, screenshots, "06-prefect-scheduled-retrain")


def _parent_run_id(live_stack, flow_run_id: str) -> tuple[str, str]:
    client = MlflowClient(tracking_uri=live_stack.mlflow_url)
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.prefect_flow_run_id = '{flow_run_id}'"
    )
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return experiment.experiment_id, parent.info.run_id


def open_mlflow_experiment(page, live_stack) -> None:
    page.goto(live_stack.mlflow_url)
    dismiss_mlflow_popups(page)
    page.get_by_text("Model training", exact=True).click()
    page.get_by_role("link", name=tracking.EXPERIMENT, exact=True).first.click()


def test_the_experiment_is_tagged_as_model_training(live_stack, form_run):
    # given the experiment the runs log to
    client = MlflowClient(tracking_uri=live_stack.mlflow_url)
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
    # then it says it trains models (MLflow 3's UI guessed GenAI without the tag)
    assert experiment.tags.get(tracking.EXPERIMENT_KIND) == tracking.MODEL_TRAINING


def _experiment_layout(page, url: str, timeout_ms: float | None = None) -> str:
    """The heading MLflow opens an experiment with: Runs (model training) or Overview (GenAI)."""
    page.goto(url)
    dismiss_mlflow_popups(page)
    heading = page.get_by_role("heading", name=re.compile(r"^(Runs|Overview)$"))
    expect(heading).to_be_visible(timeout=timeout_ms)
    return heading.inner_text().strip()


def test_a_link_with_the_model_training_layout_opens_the_runs_table(live_stack, form_run, page):
    # given the experiment, in a browser that never chose a layout
    experiment_id, parent_id = _parent_run_id(live_stack, form_run["id"])
    url = f"{live_stack.mlflow_url}/#/experiments/{experiment_id}?workflowType=machine_learning"
    # when it opens the experiment with the layout in the link
    # then it is the runs table with the parent run, not GenAI's Evaluations and traces
    assert _experiment_layout(page, url) == "Runs"
    expect(page.locator(f'a[href$="/runs/{parent_id}"]').first).to_be_visible()
    expect(page.get_by_text("Evaluation runs", exact=True)).to_have_count(0)


def test_the_run_links_the_project_writes_open_the_training_layout(live_stack, form_run, page):
    # given the parent run's page as the report, the model card and Prefect link it
    # (tasks/env.mlflow_run_url), in a browser that never chose a layout
    from instructflow.tasks.env import TRAINING_LAYOUT

    experiment_id, parent_id = _parent_run_id(live_stack, form_run["id"])
    url = (
        f"{live_stack.mlflow_url}/#/experiments/{experiment_id}/runs/{parent_id}?{TRAINING_LAYOUT}"
    )
    page.goto(url)
    dismiss_mlflow_popups(page)
    # then the run opens under the experiment's Runs, not GenAI's Evaluations
    expect(page.get_by_role("heading", name=f"rlhf-smoke-seed1-{RUN_NAME}")).to_be_visible()
    expect(page.get_by_role("link", name="Runs", exact=True).first).to_be_visible()
    expect(page.get_by_text("Evaluations", exact=True)).to_have_count(0)


# MLflow 3.17's UI lays every experiment out by its GenAI / Model training switch (stored in
# the browser, GenAI until a person changes it; ?workflowType= in a link overrides it) and
# not by the mlflow.experimentKind tag: the report's and the model card's run links open
# the GenAI layout (breadcrumb "Evaluations") in a new browser. Strict: it passes, and
# fails as XPASS, once MLflow or the links give the training layout.
@pytest.mark.xfail(strict=True, reason="MLflow 3.17's UI ignores mlflow.experimentKind")
def test_a_plain_experiment_link_opens_the_runs_table(live_stack, form_run, page):
    experiment_id, _ = _parent_run_id(live_stack, form_run["id"])
    url = f"{live_stack.mlflow_url}/#/experiments/{experiment_id}"
    # 10 s, not the 60 s a loaded machine may need: it fails today (xfail), by waiting
    assert _experiment_layout(page, url, timeout_ms=10_000) == "Runs"


def test_mlflow_shows_the_parent_run_its_stage_runs_and_plots(
    live_stack, form_run, page, screenshots
):
    _, parent_id = _parent_run_id(live_stack, form_run["id"])
    # given the experiment's runs in the MLflow UI
    open_mlflow_experiment(page, live_stack)
    # when a user expands the form run's parent run
    name_cell = page.get_by_role("gridcell").filter(
        has=page.locator(f'a[href$="/runs/{parent_id}"]')
    )
    name_cell.get_by_role("button").first.click()
    # then every stage's nested run is listed under it
    for stage in sorted(STAGES):
        expect(page.get_by_role("link", name=stage, exact=True).first).to_be_visible()
    shot(page, screenshots, "07-mlflow-parent-and-stage-runs")
    # and its page is named as the Prefect flow run, and its Overview says the outcome
    page.locator(f'a[href$="/runs/{parent_id}"]').first.click()
    run_name = f"rlhf-smoke-seed1-{RUN_NAME}"
    expect(page.get_by_role("heading", name=run_name)).to_be_visible()
    expect(page.get_by_text(re.compile(r"^Status: (completed|failed)")).first).to_be_visible()
    # and the parent run's report plots open from its artifacts
    page.get_by_role("tab", name="Artifacts").click()
    page.get_by_text("report", exact=True).first.click()
    page.get_by_text("win_rate_vs_sft.png", exact=True).click()
    plot = page.get_by_role("img", name="report/win_rate_vs_sft.png")
    expect(plot).to_be_visible()
    assert plot.evaluate("img => img.naturalWidth") > 100
    shot(page, screenshots, "08-mlflow-report-plot")


def test_mlflow_shows_the_plots_of_the_parent_runs_report_md(live_stack, form_run, page):
    # given the form run's parent run, its Artifacts tab in the MLflow UI
    experiment_id, parent_id = _parent_run_id(live_stack, form_run["id"])
    page.goto(
        f"{live_stack.mlflow_url}/#/experiments/{experiment_id}/runs/{parent_id}"
        "?workflowType=machine_learning"
    )
    dismiss_mlflow_popups(page)
    page.get_by_role("tab", name="Artifacts").click()
    # when a user opens report/report.md in MLflow's Markdown preview
    page.get_by_text("report", exact=True).first.click()
    page.get_by_text("report.md", exact=True).click()
    expect(page.get_by_text("Promotion gate").first).to_be_visible()
    # then its plots are drawn, from the tracking server (MLflow 3.17 printed a plot named by
    # its file, as report.md on disk names it, as the text "[win_rate_vs_sft](...png)")
    expect(page.get_by_text("[win_rate_vs_sft](win_rate_vs_sft.png)")).to_have_count(0)
    plot = page.get_by_role("img", name="win_rate_vs_sft", exact=True)
    plot.scroll_into_view_if_needed()
    expect(plot).to_be_visible()
    page.wait_for_function(
        "() => [...document.images].filter(i => i.alt === 'win_rate_vs_sft')"
        ".every(i => i.complete && i.naturalWidth > 100)"
    )


def test_mlflow_registry_shows_the_aliases_where_the_registry_puts_them(
    live_stack, form_run, page, screenshots
):
    # given the registry's aliases of the smoke policy (`champion` only if a gate passed:
    # at these sizes that is up to chance; the approval tests show both on their own model)
    client = MlflowClient(tracking_uri=live_stack.mlflow_url)
    model = policy_model(form_run["wanted"])
    aliases = {k: str(v) for k, v in client.get_registered_model(model).aliases.items()}
    assert "challenger" in aliases
    # when a user opens the model registry and the policy model in the MLflow UI
    page.goto(live_stack.mlflow_url)
    dismiss_mlflow_popups(page)
    page.get_by_text("Model training", exact=True).click()
    page.get_by_role("link", name="Model registry").click()
    dismiss_mlflow_popups(page)
    page.get_by_role("link", name=model, exact=True).click()
    dismiss_mlflow_popups(page)
    # then each alias is shown on the version the registry gives it
    for alias, version in aliases.items():
        row = page.get_by_role("row").filter(
            has=page.get_by_role("link", name=f"Version {version}", exact=True)
        )
        expect(row.get_by_text(re.compile(rf"^@\s{alias}$")).first).to_be_visible()
    shot(page, screenshots, "09-mlflow-registered-policy")


def test_the_pipeline_runs_page_lists_the_versions_it_registered(live_stack, live_manual_run, page):
    # given the pipeline run that registered the live run's challenger (its versions name it)
    client = MlflowClient(tracking_uri=live_stack.mlflow_url)
    experiment_id, parent_id = _parent_run_id(live_stack, live_manual_run["id"])
    versions = client.search_model_versions(f"run_id='{parent_id}'")
    assert live_manual_run["challenger"].version in {v.version for v in versions}
    # when a user opens that run's page in the MLflow UI
    page.goto(f"{live_stack.mlflow_url}/#/experiments/{experiment_id}/runs/{parent_id}")
    dismiss_mlflow_popups(page)
    # then its Overview's "Registered models" links them (it said None)
    links = ", ".join(f'a[href*="/models/{v.name}/versions/{v.version}"]' for v in versions)
    expect(page.locator(links).first).to_be_visible()


def test_the_model_card_shows_data_version_gate_and_links_the_prefect_flow_run(
    live_stack, live_manual_run, form_run, page, screenshots
):
    # given the version the live run registered (the form run, all cached, reused it)
    client = MlflowClient(tracking_uri=live_stack.mlflow_url)
    version = client.get_model_version(
        live_manual_run["challenger"].name, live_manual_run["challenger"].version
    )
    assert f"`{version.tags['dvc_data_md5']}`" in version.description
    # The card names the runs of the last gate that judged this version: the live run's,
    # which registered it, or the form run's, whose registry stage may judge the same
    # checkpoint again (not served from cache) and rewrite the card.
    gated = {live_manual_run["id"], form_run["id"]}
    # when a user opens the version in the MLflow UI
    page.goto(f"{live_stack.mlflow_url}/#/models/{version.name}/versions/{version.version}")
    dismiss_mlflow_popups(page)
    # then its card shows the data version, the metrics and the gate's evidence and decision
    expect(page.get_by_text("data version (DVC md5):").first).to_be_visible()
    expect(page.get_by_text(version.tags["dvc_data_md5"]).first).to_be_visible()
    expect(page.get_by_text(re.compile(r"^win rate: \d\.\d{3} \(95% CI")).first).to_be_visible()
    expect(
        page.get_by_text(re.compile(r"^decision: (promoted|not promoted): ")).first
    ).to_be_visible()
    shot(page, screenshots, "14-mlflow-model-card")
    # and it links the Prefect flow run and the MLflow parent run of one pipeline run
    item = page.get_by_role("listitem")
    link = item.filter(has_text="Prefect flow run:").get_by_role("link")
    expect(link).to_be_visible()
    flow_run_id = link.inner_text().strip()
    assert flow_run_id in gated, (flow_run_id, gated)
    _, parent_id = _parent_run_id(live_stack, flow_run_id)
    expect(item.filter(has_text="MLflow parent run:").get_by_role("link")).to_have_text(parent_id)
    url = f"{live_stack.prefect_url}/runs/flow-run/{flow_run_id}"
    assert link.get_attribute("href") == url
    page.goto(link.get_attribute("href"))
    expect(page.locator(".state-badge").first).to_have_text("Completed")
    expect(page.get_by_text(flow_run_id).first).to_be_visible()


def _stage_run(live_stack, parent_id: str, stage: str):
    """The nested MLflow run of one stage under a pipeline's parent run."""
    client = MlflowClient(tracking_uri=live_stack.mlflow_url)
    parent = client.get_run(parent_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    [run] = [r for r in children if r.info.run_name == stage]
    return run


def _as_rendered(markdown: str) -> list[str]:
    """The paragraphs of a description as rendered markdown reads: no `**` or backticks."""
    return [re.sub(r"\*\*|`", "", p).strip() for p in markdown.split("\n\n") if p.strip()]


def test_a_stage_runs_overview_shows_its_description_rendered(
    live_stack, live_manual_run, page, screenshots
):
    # given the reward model's stage run under the live run's parent run, and the
    # description the store holds for it (tasks/stage_notes.py)
    experiment_id, parent_id = _parent_run_id(live_stack, live_manual_run["id"])
    run = _stage_run(live_stack, parent_id, "reward_model")
    note = run.data.tags["mlflow.note.content"]
    # when a user opens that run's page in the MLflow UI
    page.goto(
        f"{live_stack.mlflow_url}/#/experiments/{experiment_id}/runs/{run.info.run_id}"
        "?workflowType=machine_learning"
    )
    dismiss_mlflow_popups(page)
    expect(page.get_by_role("heading", name="reward_model", exact=True)).to_be_visible()
    # then its Overview shows every paragraph of that description
    for paragraph in _as_rendered(note):
        expect(page.get_by_text(paragraph, exact=True).first).to_be_visible()
    # and whole: not folded behind MLflow's "Show more" (it folds one after about 4 lines)
    expect(page.get_by_text("Show more", exact=True)).to_have_count(0)
    shot(page, screenshots, "16-mlflow-stage-run-description")
    # and as rendered markdown: bold and code drawn, no raw `**` or table pipes in sight
    text = page.locator("main, body").first.inner_text()
    assert "**" not in text, text
    assert not re.search(r"^\s*\|.*\|\s*$", text, re.MULTILINE), text
    bold, code = re.search(r"\*\*(.+?)\*\*", note)[1], re.search(r"`(.+?)`", note)[1]
    expect(page.locator("strong", has_text=bold).first).to_be_visible()
    expect(page.locator("code", has_text=code).first).to_be_visible()
