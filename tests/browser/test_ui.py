"""The users' path through the two UIs, in a real browser, on the `make serve` stack.

Prefect UI: deployment manual-run, Custom run, the parameter form filled in
(profile smoke, seed 1, the reduced fast-smoke sizes in the nested stage
sections), submitted, followed until Completed, its report artifact opened;
the scheduled-retrain deployment with its next run. MLflow UI: the parent run
with its nested stage runs and a report plot, and the registered policy with
its aliases where the registry puts them.

The Custom Run asks for what live_manual_run (tests/conftest.py) already ran
through the API, so every stage is served from Prefect's cache and the run
costs about half a minute; a form that sent other values would re-train.
Each step saves a screenshot (docs/screenshots/ under `make screenshots`).
"""

import datetime as dt
import re
import time

import pytest
from cronsim import CronSim
from mlflow import MlflowClient
from playwright.sync_api import expect

from instructflow.flows.params import PipelineParams
from instructflow.tasks import tracking
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
    """MLflow greets a new browser with a modal about its new registry UI (whenever it
    likes: a handler closes it before any action it would block) and a tour tip."""
    modal = page.get_by_role("dialog").filter(has_text="new Model Registry UI")
    page.add_locator_handler(
        modal, lambda found: found.get_by_role("button", name="Try it now").click()
    )
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
        page.wait_for_url(lambda url: not url.split("?")[0].endswith("/run"))
        flow_run_id = _flow_run_named(live_stack, RUN_NAME)
        page.goto(f"{live_stack.prefect_url}/runs/flow-run/{flow_run_id}")
        badge = page.locator(".state-badge").first
        expect(badge).to_have_text(
            re.compile("Completed|Failed|Crashed|Cancelled"), timeout=600_000
        )
        state = badge.inner_text().strip()
        shot(page, screenshots, "04-prefect-flow-run-completed")

        page.get_by_text("Artifacts", exact=True).first.click()
        page.get_by_text("rlhf-report", exact=True).click()
        expect(page.get_by_text("MLflow run:")).to_be_visible()
        report_text = page.locator("main, body").first.inner_text()
        shot(page, screenshots, "05-prefect-report-artifact")
    except Exception:
        shot(page, screenshots, "failed-form-run")
        raise
    finally:
        context.close()
    return {"id": flow_run_id, "state": state, "wanted": wanted, "report_text": report_text}


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
    # and the parent run's report plots open from its artifacts
    page.locator(f'a[href$="/runs/{parent_id}"]').first.click()
    page.get_by_role("tab", name="Artifacts").click()
    page.get_by_text("report", exact=True).first.click()
    page.get_by_text("win_rate_vs_sft.png", exact=True).click()
    plot = page.get_by_role("img", name="report/win_rate_vs_sft.png")
    expect(plot).to_be_visible()
    assert plot.evaluate("img => img.naturalWidth") > 100
    shot(page, screenshots, "08-mlflow-report-plot")


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


def test_the_model_card_shows_data_version_gate_and_links_the_prefect_flow_run(
    live_stack, live_manual_run, page, screenshots
):
    # given the version the live run registered (the form run, all cached, reused it)
    client = MlflowClient(tracking_uri=live_stack.mlflow_url)
    version = client.get_model_version(
        live_manual_run["challenger"].name, live_manual_run["challenger"].version
    )
    assert f"`{version.tags['dvc_data_md5']}`" in version.description
    flow_run_id = version.tags["prefect_flow_run_id"]
    url = f"{live_stack.prefect_url}/runs/flow-run/{flow_run_id}"
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
    # and its flow run id links the Prefect flow run that made it
    link = page.get_by_role("link", name=flow_run_id, exact=True).first
    expect(link).to_be_visible()
    assert link.get_attribute("href") == url
    page.goto(link.get_attribute("href"))
    expect(page.locator(".state-badge").first).to_have_text("Completed")
    expect(page.get_by_text(flow_run_id).first).to_be_visible()
