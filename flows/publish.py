"""What a completed run publishes: reports/<run id>/, reports/latest, the MLflow parent run's
report/ and Overview, and the Prefect artifacts `rlhf-report` and `rlhf-policies`.

One function for a run on the embedded world and one on a dataset, so that both
leave the same things behind (a dataset's report.md adds its Dataset section:
report.report_markdown, which `eval import` renders it with too).
"""

import json
from pathlib import Path

import mlflow
from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from instructflow.tasks import outages, plots, report, report_table, run_status
from instructflow.tasks.paths import reports_dir

REPORT_KEY, POLICIES_KEY = "rlhf-report", "rlhf-policies"


def _report_note(parent_id: str) -> str:
    return f"also reports/{parent_id}/report.md and the MLflow run's report/ folder"


def publish(result: dict, plotted: list[Path], url: str) -> None:
    """reports/<run id>/ (report.json, report.md, its plots), reports/latest, MLflow and
    Prefect."""
    parent_id, candidate = result["run"]["mlflow_run_id"], result["gate"].get("candidate")
    run_status.at_stage("report")
    # the evaluation's plots beside report.md, the win rates' with the gate's candidate marked
    figures = plots.for_report(plotted, candidate, reports_dir() / parent_id)
    names = [str(f) for f in figures]
    markdown = report.report_markdown(result, mlflow_url=url, plots=names)
    run_dir = report.write_report(result, reports_dir(), markdown, extra_files=figures)
    report.publish_latest(run_dir, reports_dir())  # the run is complete: nothing after fails it
    web = report.log_report(run_dir, result, url, names)  # plots by their MLflow URLs
    mlflow.set_tag("mlflow.note.content", report.run_summary(result))  # the run's Overview
    why = "the run's report artifacts are created there"
    outages.wait_if_not_answering(outages.PREFECT_API, outages.prefect_api_url(), why)
    create_markdown_artifact(markdown=web, key=REPORT_KEY, description=_report_note(parent_id))
    create_table_artifact(
        table=report_table.table_rows(result),
        key=POLICIES_KEY,
        description=report_table.table_description(result),
    )
    get_run_logger().info("report: %s  MLflow: %s", reports_dir() / "latest" / "report.json", url)


def republish_artifacts(result: dict, web: str) -> None:
    """Newer versions of the run's `rlhf-report` and `rlhf-policies`, made from outside its
    flow run (`eval import`): Prefect shows a key's latest version, which would otherwise
    still say the automatic gate's verdict. Raises where the flow run is not on this
    Prefect server (or none answers)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactCreate
    from prefect.exceptions import ObjectNotFound

    flow_run_id = result["run"].get("prefect_flow_run_id")
    if not flow_run_id:
        raise LookupError("the report names no Prefect flow run")
    from instructflow.tasks import temporary_server

    if not temporary_server.may_hold_flow_run(flow_run_id):  # no server started to be sure
        database = temporary_server.database_path()
        raise LookupError(f"flow run {flow_run_id} is not in this Prefect database, {database}")
    temporary_server.prepare()  # one it starts: apart, on a kernel port, as a run's
    parent_id = result["run"]["mlflow_run_id"]
    # the REST API, as create_*_artifact calls it, with the flow run named: those helpers
    # take it from the run context, and warn (deprecated) when called outside one
    artifacts = [
        ArtifactCreate(
            key=REPORT_KEY,
            type="markdown",
            data=web,
            description=_report_note(parent_id),
            flow_run_id=flow_run_id,
        ),
        ArtifactCreate(
            key=POLICIES_KEY,
            type="table",
            data=json.dumps(report_table.table_rows(result)),
            description=report_table.table_description(result),
            flow_run_id=flow_run_id,
        ),
    ]
    with get_client(sync_client=True) as client:
        try:  # another server's run (or one since deleted): say so, make nothing
            client.read_flow_run(flow_run_id)
        except ObjectNotFound:
            raise LookupError(f"flow run {flow_run_id} is not on this Prefect server") from None
        for artifact in artifacts:
            client.create_artifact(artifact)
