"""Promotion approval in the Prefect UI: one reviewer rejects, another approves.

The model asked about is the test's own registered model (MODEL), two
versions of the live run's policy: v1 `champion`, v2 `challenger`, as a
passed gate awaiting approval leaves them. Not instructflow-policy-smoke: the
live stack's other tests (tests/flows/test_concurrency.py) check that only
gates moved its `champion`. tests/browser/review_flow.py asks about v2 with
the pipeline's own code and the live run's real gate evidence; the browser
opens the paused run, reads the evidence, presses Resume and answers the
form. Reject leaves `champion` on v1; Approve moves it to v2; both leave the
decision, who and why as tags on v2 and in its model card, which the MLflow
UI shows.
"""

import json
import os
import re
import subprocess
import sys
import time
import uuid

import pytest
from mlflow import MlflowClient
from playwright.sync_api import expect

from tests.browser import prefect_form
from tests.browser.test_ui import dismiss_mlflow_popups, shot
from tests.live_stack import RETRYABLE

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MODEL = "instructflow-policy-approval-test"


@pytest.fixture(scope="module")
def review_model(live_stack, live_manual_run) -> MlflowClient:
    """MODEL with v1 champion and v2 challenger, both the live run's registered policy."""
    policy = live_manual_run["challenger"]
    assert policy is not None, live_stack.logs(live_manual_run["id"])
    client = MlflowClient(tracking_uri=live_stack.mlflow_url)
    # The version's source is its logged model, models:/<model_id> (the REST client
    # leaves ModelVersion.model_id empty); a new version needs that id named with it.
    model_id = policy.source.removeprefix("models:/")
    assert model_id.startswith("m-"), policy.source
    client.create_registered_model(MODEL)
    for _ in range(2):
        client.create_model_version(MODEL, source=policy.source, model_id=model_id)
    client.set_registered_model_alias(MODEL, "champion", "1")
    client.set_registered_model_alias(MODEL, "challenger", "2")
    return client


def _paused_run(live_stack, flow: subprocess.Popen, run_name: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and flow.poll() is None:
        found = live_stack.request(
            "POST",
            "/flow_runs/filter",
            json={
                "flow_runs": {
                    "name": {"any_": [run_name]},
                    "state": {"type": {"any_": ["PAUSED"]}},
                },
            },
        ).json()
        if found:
            return found[0]["id"]
        time.sleep(1)
    out, err = flow.communicate(timeout=30) if flow.poll() is not None else ("", "")
    raise AssertionError(f"the review flow never paused for input\n{out[-2000:]}\n{err[-3000:]}")


def _answer_form(live_stack, page, run_id: str, answer: dict, screenshots, name: str):
    """Open the paused run, press Resume, fill and submit the form; Prefect's answer to it."""
    page.goto(f"{live_stack.prefect_url}/runs/flow-run/{run_id}")
    page.get_by_role("button", name="Resume", exact=True).first.click()
    # The form shows the gate's evidence before the question.
    expect(page.get_by_text(f"Promote {MODEL} v2")).to_be_visible()
    expect(
        page.get_by_text(re.compile(r"^win rate vs (sft|champion v\d+) \(head to head"))
    ).to_be_visible()
    dialog = page.get_by_role("dialog")
    prefect_form.fill(dialog, answer, top_level=False)
    shot(page, screenshots, name)
    with page.expect_response(lambda r: r.url.endswith(f"/flow_runs/{run_id}/resume")) as sent:
        dialog.get_by_role("button", name="Submit", exact=True).click()
    return sent.value


def _review_in_browser(live_stack, live_manual_run, page, screenshots, answer, name) -> dict:
    """Start the review flow, answer its paused run in the UI; return what the flow recorded."""
    policy = live_manual_run["challenger"]
    parent = policy.tags["mlflow_parent_run_id"]
    report = live_stack.checkout / "reports" / parent / "report.json"
    env = live_stack.env | {
        "PREFECT_API_URL": f"{live_stack.prefect_url}/api",
        "MLFLOW_TRACKING_URI": live_stack.mlflow_url,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # tests.browser from the copy; the project itself as this process imports it
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(live_stack.checkout), os.environ.get("PYTHONPATH")])
        ),
    }
    link = f"{live_stack.mlflow_url}/#/models/{MODEL}/versions/2"
    run_name = f"review-{name}-{uuid.uuid4().hex[:8]}"
    flow = subprocess.Popen(
        [sys.executable, "-m", "tests.browser.review_flow", run_name, MODEL, "2", "1"]
        + [str(report), link],
        cwd=live_stack.checkout,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run_id = _paused_run(live_stack, flow, run_name, timeout=240)
        resumed = _answer_form(live_stack, page, run_id, answer, screenshots, name)
        if resumed.status in RETRYABLE:
            # Prefect's SQLite server answers 503 while its store is busy; the UI shows
            # the error and a person submits again, as this does (once).
            print(f"resume answered {resumed.status}: submitting the form again")
            resumed = _answer_form(live_stack, page, run_id, answer, screenshots, name)
        assert resumed.ok, f"Prefect answered the resume with HTTP {resumed.status}"
        verdict = resumed.json()
        assert verdict.get("status") == "ACCEPT", f"Prefect did not resume the run: {verdict}"
        out, err = flow.communicate(timeout=240)
    except Exception:
        shot(page, screenshots, f"failed-{name}")
        flow.kill()
        raise
    assert flow.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_a_rejected_promotion_leaves_champion_and_records_why(
    live_stack, live_manual_run, review_model, page, screenshots
):
    # when reviewer bo rejects v2 on the paused run's form
    answer = {"decision": "Reject", "reviewer": "bo", "reason": "head-to-head CI reaches below 0.5"}
    gate = _review_in_browser(
        live_stack, live_manual_run, page, screenshots, answer, "10-prefect-approval-form"
    )
    # then champion stays on v1, and v2 records the decision, who and why
    assert (gate["approval"]["decision"], gate["champion"], gate["promoted"]) == (
        "rejected",
        "1",
        False,
    )
    assert str(review_model.get_model_version_by_alias(MODEL, "champion").version) == "1"
    version = review_model.get_model_version(MODEL, "2")
    assert (
        version.tags["approval_decision"],
        version.tags["approval_by"],
        version.tags["approval_reason"],
    ) == ("rejected", "bo", "head-to-head CI reaches below 0.5")
    assert "promoted_by" not in version.tags
    assert "rejected by bo (left `champion` unchanged; champion: v1)" in version.description
    # and the MLflow UI shows champion on v1, challenger on v2
    page.goto(f"{live_stack.mlflow_url}/#/models/{MODEL}")
    dismiss_mlflow_popups(page)
    for alias, number in (("champion", "1"), ("challenger", "2")):
        row = page.get_by_role("row").filter(
            has=page.get_by_role("link", name=f"Version {number}", exact=True)
        )
        expect(row.get_by_text(re.compile(rf"^@\s{alias}$")).first).to_be_visible()
    shot(page, screenshots, "11-mlflow-after-reject")


def test_an_approved_promotion_moves_champion_and_records_who(
    live_stack, live_manual_run, review_model, page, screenshots
):
    # when reviewer ana approves v2 (v1 still champion: the gate's opponent)
    answer = {
        "decision": "Approve",
        "reviewer": "ana",
        "reason": "seen the evidence; approved for the UI test",
    }
    gate = _review_in_browser(
        live_stack, live_manual_run, page, screenshots, answer, "12-prefect-approval-approve"
    )
    # then champion moved to v2, and v2 records who approved and why
    assert (gate["approval"]["decision"], gate["champion"], gate["promoted"]) == (
        "approved",
        "2",
        True,
    )
    assert str(review_model.get_model_version_by_alias(MODEL, "champion").version) == "2"
    tags = review_model.get_model_version(MODEL, "2").tags
    assert (tags["approval_decision"], tags["approval_by"]) == ("approved", "ana")
    assert (tags["promoted_by"], tags["previous_champion"]) == ("approval", "1")
    # and the MLflow UI shows it: champion on v2, the reason in its model card
    page.goto(f"{live_stack.mlflow_url}/#/models/{MODEL}/versions/2")
    dismiss_mlflow_popups(page)
    expect(page.get_by_text(re.compile(r"^@\schampion$")).first).to_be_visible()
    expect(page.get_by_text("seen the evidence; approved for the UI test").first).to_be_visible()
    shot(page, screenshots, "13-mlflow-approved-version")
