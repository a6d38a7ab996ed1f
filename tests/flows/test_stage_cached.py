"""A stage Prefect serves from its cache is known to the flow that called it (run_stage's
`cached`), so the flow can say so in its report and redo what only the stage's task did
in its own flow run: the registry stage's `promotion-gate` artifact. So is each stage's
cache key (`keys`), which the report's stage table shows."""

from pathlib import Path

from prefect import flow, task
from prefect.runtime import flow_run

from instructflow.flows import stages
from instructflow.tasks import registry
from instructflow.tasks.gate import decide, gate_markdown
from instructflow.tasks.stage import mark_done, prefect_options
from tests.conftest import use_project

CALLS: list[str] = []


@task(**prefect_options("evaluation", "test-stage-cached"))
def small_stage(out_dir: str, parent_run_id: str) -> dict:
    CALLS.append(out_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return mark_done(out, {"dir": out_dir, "metrics": {}, "mlflow_run_id": "computed"})


@flow
def one_run(salt: str) -> set[str]:
    cached: set[str] = set()
    stages.run_stage(small_stage, "evaluation", {"salt": salt}, {}, "parent", cached=cached)
    return cached


@flow
def keyed_run(salt: str) -> tuple[dict, dict]:
    keys: dict[str, str] = {}
    result = stages.run_stage(small_stage, "evaluation", {"salt": salt}, {}, "parent", keys=keys)
    return keys, result


def test_a_stage_served_from_the_cache_is_named_to_the_caller(
    prefect_harness, tmp_path, monkeypatch, no_mlflow
):
    use_project(monkeypatch, tmp_path)
    CALLS.clear()
    # given a stage computed by a first flow run
    assert one_run(str(tmp_path)) == set()
    # when a second flow run reaches it with the same key
    again = one_run(str(tmp_path))
    # then it was not computed again, and the caller knows it came from the cache
    assert len(CALLS) == 1
    assert again == {"evaluation"}


def test_a_finished_stage_whose_prefect_result_is_gone_is_taken_from_its_folder(
    prefect_harness, tmp_path, monkeypatch, no_mlflow
):
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    use_project(monkeypatch, tmp_path)
    CALLS.clear()
    # given a stage computed by a first flow run
    keys, first = keyed_run(str(tmp_path))
    assert len(CALLS) == 1
    # when Prefect's result store loses its result (runs/prefect-results/ deleted)
    (Path(PREFECT_LOCAL_STORAGE_PATH.value()) / keys["evaluation"]).unlink()
    # then the next run takes the finished folder as the result: not computed again (the
    # task emptied the folder and trained once more), and named as served from a cache
    assert one_run(str(tmp_path)) == {"evaluation"}
    assert len(CALLS) == 1
    # and the result is back in Prefect's store: the run after is Prefect's own cache hit
    assert (Path(PREFECT_LOCAL_STORAGE_PATH.value()) / keys["evaluation"]).exists()
    _, again = keyed_run(str(tmp_path))
    assert again == first and len(CALLS) == 1


def test_run_stage_gives_the_caller_each_stage_s_cache_key(
    prefect_harness, tmp_path, monkeypatch, no_mlflow
):
    use_project(monkeypatch, tmp_path)
    # when a stage runs
    keys, result = keyed_run(str(tmp_path))
    # then the caller has its key: the name of the folder it wrote
    assert keys == {"evaluation": Path(result["dir"]).name}


def test_every_stage_key_goes_to_the_report_once():
    # given the report's keys by policy (base: the base_model stage's), and every stage's
    by_policy = {"base": "base_model-1", "base_fewshot": "base_model-1", "sft": "sft-2"}
    run = {"data": "data-0", "base_model": "base_model-1", "sft": "sft-2", "comparisons": "c-3"}
    # then the stages the policies do not name are added by stage name, the others not twice
    assert stages.with_every_stage(by_policy, run) == by_policy | {
        "data": "data-0",
        "comparisons": "c-3",
    }


def _artifacts(flow_run_id: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as prefect:
        of_this_run = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        return prefect.read_artifacts(flow_run_filter=of_this_run)


def test_a_cached_registry_stage_gets_its_promotion_gate_artifact_from_the_cached_decision(
    prefect_harness,
):
    # given a registry stage's result as the cache serves it (the decision as a dict,
    # its CI a list after the round trip)
    decision = decide(0.7, (0.6, 0.8), 0.42, 0.40, 0.02, "champion v3")
    cached = {
        "policy_version": "4",
        "decision": {**vars(decision), "ci95": list(decision.ci95)},
        "gate": {
            "note": "champion v3 loaded from the registry",
            "promoted": False,
            "awaiting_approval": True,
        },
    }

    @flow
    def rerun() -> str:
        registry.republish_gate("instructflow-policy-smoke", cached)
        return str(flow_run.id)

    # when the re-run's flow publishes it
    (artifact,) = [a for a in _artifacts(rerun()) if a.key == "promotion-gate"]
    # then its flow run has the artifact the computing run's had
    assert artifact.data == gate_markdown(
        "instructflow-policy-smoke", "4", decision, cached["gate"]
    )
    # what happened to `champion` (here: waiting for a person), in the artifact list too
    assert (
        artifact.description == "instructflow-policy-smoke v4: passed, awaiting a person's approval"
    )
