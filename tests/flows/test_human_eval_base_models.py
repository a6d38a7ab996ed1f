"""People's rankings decide the gate again (`instructflow eval import`): a champion trained from
another base model than the candidate is still said to be no like-for-like rival."""

import pytest
from mlflow import MlflowClient

from instructflow.flows import human_eval
from tests.conftest import use_project

POLICY = "instructflow-policy-smoke"
LINE = (
    "not like for like: champion v1 was trained from base model embedded GPT-2 (smoke), "
    "the candidate from gpt2"
)


@pytest.fixture
def client(tmp_path, monkeypatch) -> MlflowClient:
    """v1 (champion, the embedded GPT-2) and v2 (the run's candidate, from the Hub's gpt2)."""
    client = MlflowClient(tracking_uri=use_project(monkeypatch, tmp_path))
    client.create_registered_model(POLICY)
    for base in ("embedded GPT-2 (smoke)", "gpt2"):
        client.create_model_version(POLICY, str(tmp_path), tags={"base_model": base})
    client.set_registered_model_alias(POLICY, "champion", "1")
    return client


def _regate(client: MlflowClient) -> dict:
    """The run's gate (champion v1 played, kept) decided again on people preferring v2 in
    every one of 30 items."""
    gate = {
        "model_name": POLICY,
        "policy_version": "2",
        "candidate": "ppo_ptx",
        "incumbent": "champion v1",
        "champion": "1",
        "evidence": "held-out labelers",
        "prompts": 30,
        "win_rate": {"mean": 0.5, "ci95": [0.4, 0.6]},
        "reason": f"win rate vs champion v1 0.500 has 95% CI lower end 0.400 <= 0.5; {LINE}",
        "promoted": False,
    }
    key = {f"i{i}": {"A": "ppo_ptx", "B": "champion v1"} for i in range(30)}
    labels = {item: {"ranking": ["A", "B"], "likert": {}} for item in key}
    return human_eval._regate(client, gate, labels, key)


def test_peoples_verdict_against_a_champion_of_another_base_model_says_so(client):
    # when people's rankings decide the gate again
    regated = _regate(client)
    # then their reason keeps the line naming both base models, as the version's tag does
    assert regated["reason"].endswith(f"; {LINE}") and regated["promote"]
    assert client.get_model_version(POLICY, "2").tags["gate_reason"] == regated["reason"]


def test_a_champion_deleted_since_its_gate_adds_no_line_and_no_failure(client):
    # given the champion the run's gate played deleted since (another champion now)
    client.set_registered_model_alias(POLICY, "champion", "2")
    client.delete_model_version(POLICY, "1")
    # when people's rankings decide again, then it is decided, without the line
    regated = _regate(client)
    assert "not like for like" not in regated["reason"]
