"""`gate.require_approval` on a dataset run: a passed gate pauses the flow on Prefect's form, and the answer decides `champion`."""

import dataclasses
import json

import pytest
from mlflow import MlflowClient

from instructflow.flows import dataset_gate
from instructflow.flows.cli import main
from instructflow.tasks.gate import GateDecision, judge_decision
from instructflow.tasks.registry_config import RegistryConfig
from tests.conftest import init_dvc_project, use_project
from tests.flows.test_approval import _answer_when_paused
from tests.own_data import write_hh_dataset
from tests.tiny_models import tiny_llama

pytestmark = pytest.mark.slow


def _gate_passes(*args, **kwargs) -> GateDecision:
    """judge_decision as if the judge were trustworthy and the candidate clearly better:
    a run this small cannot be relied on to pass the gate by itself."""
    real = judge_decision(*args, **kwargs)
    return dataclasses.replace(real, promote=True, reason=f"beats {real.incumbent} (test)")


@pytest.mark.parametrize(
    ("answer", "champion"),
    [
        ({"decision": "Approve", "reviewer": "ana", "reason": "reads well"}, "1"),
        ({"decision": "Reject", "reviewer": "bo", "reason": "too short"}, None),
    ],
)
def test_a_passed_gate_on_a_dataset_waits_for_a_person(
    prefect_harness, fast_smoke, tmp_path, monkeypatch, answer, champion
):
    # given a dataset run whose gate passes, with approval required
    root = init_dvc_project(tmp_path / "project")
    uri = use_project(monkeypatch, root)
    data = write_hh_dataset(tmp_path / "hh", n_pairs=120)
    texts = [line for f in data.iterdir() for line in f.read_text().splitlines()]
    llama = tiny_llama(tmp_path / "llama", texts)
    params = tmp_path / "params.json"
    params.write_text(json.dumps(fast_smoke(gate={"require_approval": True})))
    monkeypatch.setattr(dataset_gate, "judge_decision", _gate_passes)
    # when it runs and a person answers the paused run's form
    reviewer = _answer_when_paused(answer, seen := {})
    argv = ["run", "--data", str(data), "--base-model", str(llama), "--params", str(params)]
    assert main(argv) == 0
    reviewer.join(timeout=5)
    # then the run waited for that answer, and champion is where the answer puts it
    assert len(seen) == 1
    gate = json.loads((root / "reports" / "latest" / "report.json").read_text())["gate"]
    assert gate["approval"]["decision"] == ("approved" if champion else "rejected")
    assert gate["approval"]["reviewer"] == answer["reviewer"]
    assert (gate["promoted"], gate["awaiting_approval"]) == (champion is not None, False)
    policy_name = RegistryConfig().names("smoke", str(data))[0]
    client = MlflowClient(tracking_uri=uri)
    aliases = client.get_registered_model(policy_name).aliases
    assert (str(aliases["champion"]) if "champion" in aliases else None) == champion
    tags = client.get_model_version(policy_name, "1").tags
    assert (tags["approval_by"], tags["approval_reason"]) == (answer["reviewer"], answer["reason"])
