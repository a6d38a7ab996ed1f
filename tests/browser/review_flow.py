"""A flow that asks for a promotion approval with the pipeline's own code (instructflow.flows.approval.review).

The browser test runs it against the live stack's Prefect server, so the form
a reviewer answers is the real one, and the evidence on it is the real gate
block and evaluation rows of the live stack's pipeline run (its report.json).
Why not the pipeline itself: it asks only when the automatic gate passes, and
at the test's reduced smoke sizes whether the challenger beats SFT is up to
chance. Everything from the question on (the pause, the form, the registry
writes) is the pipeline's code; the model it asks about is the test's own.

    python -m tests.browser.review_flow RUN_NAME MODEL VERSION CHAMPION REPORT_JSON LINK...

RUN_NAME names the flow run, so the test finds its own paused run and never
one that an earlier, failed test left paused on the same server.
"""

import json
import sys
from pathlib import Path

from prefect import flow

from instructflow.flows.approval import review


@flow(name="promotion-review")
def promotion_review(
    model: str, version: str, champion: str, report_json: str, links: list[str]
) -> dict:
    report = json.loads(Path(report_json).read_text())
    gate = report["gate"] | {"policy_version": version, "champion": champion}
    return review(model, gate, gate["candidate"], report["policies"], links, timeout_s=300)


if __name__ == "__main__":
    run_name, model, version, champion, report_json, *links = sys.argv[1:]
    named = promotion_review.with_options(flow_run_name=run_name)
    print(json.dumps(named(model, version, champion, report_json, links)))
