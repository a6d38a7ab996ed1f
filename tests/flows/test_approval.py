"""Promotion approval: the evidence a reviewer reads, and the paused run's answer (Prefect harness).

A tiny flow calls request_approval the way the pipeline does; a thread plays
the reviewer, answering through Prefect's resume_flow_run with run_input,
which is what the UI's form sends.
"""

import threading
import time

import pytest
from mlflow import MlflowClient
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.flow_runs import resume_flow_run
from prefect.runtime import flow_run

from instructflow.flows.approval import (
    Approval,
    PromotionApproval,
    after_gate,
    evidence_markdown,
    request_approval,
    review,
)
from instructflow.tasks.gate import GateConfig
from instructflow.tasks.stage_notes import MEASURES

REGISTERED = "policy-under-review"

GATE = {
    "policy_version": "4",
    "promote": True,
    "reason": "beats champion v3: win rate 0.700 (95% CI 0.600-0.800), public suite 0.450 vs 0.430",
    "incumbent": "champion v3",
    "prompts": 40,
    "win_rate": {"mean": 0.7, "ci95": [0.6, 0.8]},
    "public_suite": {"challenger": 0.45, "incumbent": 0.43},
}
POLICIES = {
    "sft": {
        "gold_score": {"mean": 0.5, "ci95": [0.45, 0.55]},
        "per_family": {"add": {"gold_score": 0.25}, "sort": {"gold_score": 0.5}},
    },
    "ppo_ptx": {
        "gold_score": {"mean": 0.7, "ci95": [0.65, 0.75]},
        "win_rate_vs_sft": {"mean": 0.62, "ci95": [0.58, 0.66]},
        "kl_to_sft": 1.25,
        "per_family": {"add": {"gold_score": 0.375}, "sort": {"gold_score": 0.625}},
    },
}


def test_the_evidence_says_kl_to_sft_is_a_sampled_estimate_as_the_report_does():
    # given a candidate whose sampled KL to SFT came out just below 0, as one at SFT's level can
    policies = POLICIES | {"ppo_ptx": POLICIES["ppo_ptx"] | {"kl_to_sft": -0.012}}
    text = evidence_markdown("instructflow-policy", GATE, "ppo_ptx", policies, [])
    # then the form shows the figure, and says what it is in the report's one wording
    assert "| KL to SFT | -0.012 | 0 |" in text
    assert f"\n\nKL to SFT: {MEASURES['kl_to_sft']}.\n" in text


def test_the_evidence_shows_both_win_rates_public_suite_kl_families_and_links():
    text = evidence_markdown("instructflow-policy", GATE, "ppo_ptx", POLICIES, ["http://m/#/r/1"])
    assert "Promote instructflow-policy v4 (ppo_ptx)" in text
    assert "The automatic gate passed: beats champion v3" in text
    assert (
        "| win rate vs champion v3 (head to head, 40 prompts) | 0.700 (95% CI 0.600-0.800) | 0.5 |"
        in text
    )
    assert "| win rate vs SFT (evaluation) | 0.620 (95% CI 0.580-0.660) | 0.5 |" in text
    assert "| public-suite accuracy | 0.450 | 0.430 (champion v3) |" in text
    assert "| KL to SFT | 1.250 | 0 |" in text
    assert "| add | 0.375 | 0.250 |" in text
    assert "| sort | 0.625 | 0.500 |" in text
    assert "[http://m/#/r/1](http://m/#/r/1)" in text
    # and how long the answers are beside SFT's, flagged when a fraction of it
    assert "| answer length (words) | - | - (SFT) |" in text  # not measured here
    lengths = {"sft": 9, "ppo_ptx": 1}
    short = {p: row | {"response_length": lengths[p]} for p, row in POLICIES.items()}
    text = evidence_markdown("instructflow-policy", GATE, "ppo_ptx", short, [])
    assert "| answer length (words) | 1.000 | 9.000 (SFT) |" in text
    assert "**Warning:** ppo_ptx's answers average 1.00 words, SFT's 9.00" in text


@flow
def asks_for_approval(timeout_s: int) -> dict:
    answer = request_approval("## evidence", timeout_s=timeout_s, poll_s=1)
    return {"id": str(flow_run.id), **answer.__dict__}


def _paused_runs(client) -> list:
    """The session server's paused flow runs, asked for as such: an unfiltered read gets the
    server's first 200 runs in id order (random ids), which a worker's session can exceed."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    paused = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
    return [
        run
        for run in client.read_flow_runs(flow_run_filter=FlowRunFilter(state=paused))
        if run.state and run.state.is_paused()
    ]


def _answer_when_paused(answer: dict, seen: dict) -> threading.Thread:
    """A reviewer: wait for a paused run with the approval form, then answer it."""

    def review() -> None:
        deadline = time.monotonic() + 120
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline:
                paused = [run for run in _paused_runs(client) if str(run.id) not in seen]
                if paused:
                    run = paused[0]
                    seen[str(run.id)] = run.state.state_details.run_input_keyset
                    resume_flow_run(run.id, run_input=answer)
                    return
                time.sleep(0.5)

    thread = threading.Thread(target=review, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            {"decision": "Approve", "reviewer": "ana", "reason": "wins on every family"},
            Approval("approved", "ana", "wins on every family"),
        ),
        (
            {"decision": "Reject", "reviewer": "bo", "reason": "KL too high"},
            Approval("rejected", "bo", "KL too high"),
        ),
    ],
)
def test_the_reviewers_answer_comes_back_to_the_flow(prefect_harness, answer, expected):
    seen: dict = {}
    reviewer = _answer_when_paused(answer, seen)
    result = asks_for_approval(timeout_s=120)
    reviewer.join(timeout=5)
    assert Approval(result["decision"], result["reviewer"], result["reason"]) == expected
    assert result["id"] in seen and seen[result["id"]] is not None  # the run waited for input


def test_no_answer_before_the_timeout_is_no_promotion(prefect_harness):
    result = asks_for_approval(timeout_s=2)
    assert result["decision"] == "timeout"
    assert result["reviewer"] == "nobody"


def test_a_run_nobody_answered_still_completes(prefect_harness):
    # Prefect keeps a timed-out pause Paused and refuses the run's Completed after it
    # ("never resumed"): the pipeline went on to its report, yet its flow run ended
    # Failed and `instructflow run` raised on it.
    state = asks_for_approval(timeout_s=2, return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["decision"] == "timeout"


def test_no_question_when_approval_is_off_or_the_gate_failed():
    assert after_gate(GateConfig(), "m", GATE, "ppo_ptx", POLICIES, []) is GATE
    failed = GATE | {"promote": False}
    on = GateConfig(require_approval=True)
    assert after_gate(on, "m", failed, "ppo_ptx", POLICIES, []) is failed


@flow
def reviews_version_2(tracking_uri: str, timeout_s: int) -> dict:
    gate = GATE | {"policy_version": "2", "champion": "1"}
    client = MlflowClient(tracking_uri=tracking_uri)
    return review(REGISTERED, gate, "ppo_ptx", POLICIES, [], timeout_s, client=client)


@pytest.mark.parametrize(
    ("answer", "champion"),
    [
        ({"decision": "Approve", "reviewer": "ana", "reason": "wins on every family"}, "2"),
        ({"decision": "Reject", "reviewer": "bo", "reason": "KL too high"}, "1"),
    ],
)
def test_the_answer_reaches_the_registry(prefect_harness, tmp_path, answer, champion):
    # given a registry with champion v1 and the challenger v2 a passed gate registered
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    client.create_registered_model(REGISTERED)
    for _ in range(2):
        client.create_model_version(REGISTERED, source=(tmp_path / "model").as_uri())
    client.set_registered_model_alias(REGISTERED, "champion", "1")
    # when a reviewer answers the paused run
    reviewer = _answer_when_paused(answer, {})
    gate = reviews_version_2(uri, timeout_s=120)
    reviewer.join(timeout=5)
    # then champion is where the answer puts it, and the version records who and why
    assert (gate["champion"], gate["promoted"]) == (champion, champion == "2")
    assert str(client.get_model_version_by_alias(REGISTERED, "champion").version) == champion
    tags = client.get_model_version(REGISTERED, "2").tags
    assert (tags["approval_by"], tags["approval_reason"]) == (answer["reviewer"], answer["reason"])
    assert tags["approval_decision"] == ("approved" if champion == "2" else "rejected")


def test_a_dataset_gates_evidence_names_the_judge_and_leaves_out_what_a_dataset_lacks():
    # given a dataset run's gate: SFT played on the evaluation's prompts by the held-out judge,
    # no public suite (no such field), no gold score
    gate = {k: v for k, v in GATE.items() if k != "public_suite"} | {
        "incumbent": "sft",
        "prompts": None,
        "evidence": "held-out judge",
    }
    policies = {"ppo": {"win_rate_vs_sft": {"mean": 0.7, "ci95": [0.6, 0.8]}, "kl_to_sft": 0.5}}
    text = evidence_markdown("instructflow-policy-hh", gate, "ppo", policies, [])
    assert (
        "| win rate vs sft (evaluation, held-out judge) | 0.700 (95% CI 0.600-0.800) | 0.5 |"
        in text
    )
    assert "public-suite" not in text and "gold score" not in text
    assert "| KL to SFT | 0.500 | 0 |" in text
    # and the same figure is not shown twice (its rival is SFT, on the evaluation's prompts)
    assert "win rate vs SFT (evaluation)" not in text


@pytest.mark.parametrize("field", ["reviewer", "reason"])
def test_a_blank_reviewer_or_reason_is_refused_on_the_form(field):
    # Whitespace passed min_length and was stripped: the version's tags said
    # approval_by='' (who decided, unknown). Prefect checks a resume's input against
    # the form's JSON schema, so the refusal has to be in the schema.
    import jsonschema
    from pydantic import ValidationError

    answer = {"decision": "Approve", "reviewer": "ana", "reason": "wins"} | {field: "  \t"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(answer, PromotionApproval.model_json_schema())
    with pytest.raises(ValidationError):
        PromotionApproval(**answer)


def test_a_run_cancelled_while_paused_is_not_put_back_running(prefect_harness):
    from prefect.states import Cancelling

    seen: dict = {}

    def cancel() -> None:
        deadline = time.monotonic() + 60
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline and not seen:
                for run in _paused_runs(client):
                    if run.state.state_details.pause_key:
                        if run.name.startswith("cancel-me"):
                            seen["id"] = run.id
                            client.set_flow_run_state(run.id, Cancelling(), force=True)
                time.sleep(0.3)

    thread = threading.Thread(target=cancel, daemon=True)
    thread.start()
    # (a pause of 10 s to be seen and cancelled in: 3 s could pass before a loaded host saw it)
    state = asks_for_approval.with_options(flow_run_name="cancel-me")(
        timeout_s=10, return_state=True
    )
    thread.join(timeout=5)
    assert seen
    with get_client(sync_client=True) as client:
        assert not client.read_flow_run(seen["id"]).state.is_running()
    assert not state.is_running()
