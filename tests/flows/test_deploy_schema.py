"""A deployment run whose settings are not under `params` is refused by Prefect's parameter
check when the run is created, not accepted and crashed in the worker."""

import pytest
from prefect.utilities.callables import parameter_schema
from prefect.utilities.schema_tools.validation import ValidationError, validate

from instructflow.flows.deploy_schema import closed
from instructflow.flows.pipeline import rlhf_pipeline


def _server_check(parameters: dict, schema: dict) -> None:
    # What Prefect's server runs on create_flow_run for a deployment that enforces its schema.
    validate(parameters, schema, raise_on_error=True, ignore_required=True)


def test_bare_settings_are_refused_and_the_form_shape_passes():
    schema = closed(parameter_schema(rlhf_pipeline).model_dump_for_openapi())

    with pytest.raises(ValidationError, match="Additional properties are not allowed"):
        _server_check({"profile": "smoke", "seed": 3}, schema)
    _server_check({"params": {"profile": "smoke", "seed": 3}}, schema)
    _server_check({"params": {"profile": "smoke"}, "sweep_run_id": None}, schema)


def test_serve_closes_the_deployments_after_deploying():
    from pathlib import Path

    serve = (Path(__file__).resolve().parents[2] / "scripts" / "serve.sh").read_text()
    deploy = serve.index("deploy --all")
    assert serve.index("-m instructflow.flows.deploy_schema", deploy) > deploy
