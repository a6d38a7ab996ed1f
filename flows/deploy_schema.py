"""After `prefect deploy` (scripts/serve.sh): the deployments refuse a run's unknown top-level keys.

Prefect builds a deployment's parameter schema from the flow's signature but
leaves its top level open, so a run started through the API with the settings
not under `params` (`{"profile": "smoke"}`, the bare shape `instructflow run
--params` accepts) was accepted, then crashed in the worker with a traceback
(SignatureMismatchError) instead of being refused. Closed here, it is refused
when the run is created (409, "Additional properties are not allowed"), as a
bad value inside `params` is. The UI's form only sends the declared keys.

    python -m instructflow.flows.deploy_schema
"""

from typing import Any

FLOW = "rlhf_pipeline"


def closed(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` refusing keys other than the flow's parameters."""
    return schema | {"additionalProperties": False}


def close_deployments(flow_name: str = FLOW) -> list[str]:
    """Close the parameter schema of every deployment of `flow_name`; returns their names."""
    from prefect import get_client
    from prefect.client.schemas.actions import DeploymentUpdate
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        deployments = client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name]))
        )
        for deployment in deployments:
            schema = closed(dict(deployment.parameter_openapi_schema or {}))
            client.update_deployment(
                deployment.id, DeploymentUpdate(parameter_openapi_schema=schema)
            )
    return [d.name for d in deployments]


if __name__ == "__main__":
    print(f"closed the parameter schema of {FLOW}/" + ", ".join(close_deployments()))
