"""base_fewshot showing fewer demonstrations than `evaluation.fewshot_examples` asks: report.json
(`fewshot_shortfall`) and report.md say so beside its figures, on a dataset and on the world,
and so do the MLflow parent run (a tag) and the Prefect `rlhf-policies` artifact.

A run that shows all it asked for adds nothing (tests/flows/test_own_data.py, the
prompt/chosen/rejected run)."""

import json

import pytest
from mlflow import MlflowClient

from instructflow.flows.params import PipelineParams
from instructflow.flows.pipeline import rlhf_pipeline
from tests.conftest import init_dvc_project, use_project
from tests.own_data import WORDS, write_pairwise_dataset
from tests.tiny_models import tiny_llama

pytestmark = pytest.mark.slow


def _latest(root) -> tuple[dict, str]:
    latest = root / "reports" / "latest"
    return json.loads((latest / "report.json").read_text()), (latest / "report.md").read_text()


def _shown_elsewhere(uri: str, report: dict) -> tuple[str | None, str]:
    """The parent run's `fewshot_shortfall` tag and the `rlhf-policies` artifact's description."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    tag = MlflowClient(tracking_uri=uri).get_run(report["run"]["mlflow_run_id"]).data.tags
    of_this_run = FlowRunFilter(id=FlowRunFilterId(any_=[report["run"]["prefect_flow_run_id"]]))
    with get_client(sync_client=True) as prefect:
        artifacts = prefect.read_artifacts(flow_run_filter=of_this_run)
    [policies] = [a for a in artifacts if a.key == "rlhf-policies"]
    return tag.get("fewshot_shortfall"), policies.description


def test_a_dataset_whose_training_split_holds_too_few_demonstrations_says_how_many_were_shown(
    prefect_harness, fast_smoke, tmp_path, monkeypatch
):
    # given a dataset whose demonstrations state their split: 2 train, 2 valid, 1 test
    root = init_dvc_project(tmp_path / "project")
    uri = use_project(monkeypatch, root)
    data = write_pairwise_dataset(tmp_path / "pw", n=120)
    splits = ["train", "train", "valid", "valid", "test"]
    demos = [
        {"prompt": f"Say the word {w} twice.", "response": f"{w} {w}", "split": split}
        for w, split in zip(WORDS, splits, strict=False)
    ]
    (data / "demonstrations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in demos))
    llama = tiny_llama(tmp_path / "llama", [f"Say the word {w} twice. {w} {w}" for w in WORDS] * 5)

    # when the pipeline runs on it with base_fewshot asked for 3 demonstrations (the default)
    params = fast_smoke(data=str(data), base_model=str(llama), evaluation={"fewshot_examples": 3})
    result = rlhf_pipeline(PipelineParams(**params))

    # then base_fewshot was evaluated on the 2 there are, and report.json says so, and why
    report, markdown = _latest(root)
    assert "base_fewshot" in result["policies"] and "base_fewshot" not in result["skipped"]
    reason = "the training split holds only 2 prompts with one"
    assert report["fewshot_shortfall"] == {"shown": 2, "asked": 3, "reason": reason}
    # and report.md says it under the policy table
    line = (
        f"Note: base_fewshot shows 2 of evaluation.fewshot_examples = 3 demonstrations: {reason}."
    )
    assert line in markdown and markdown.index("| base_fewshot |") < markdown.index(line)
    # and the MLflow parent run is tagged "2 of 3", the Prefect policies table says it too
    tag, description = _shown_elsewhere(uri, report)
    assert tag == "2 of 3"
    assert line.removeprefix("Note: ") in description


def test_the_embedded_world_with_fewer_families_than_demonstrations_asked_says_so(
    prefect_harness, make_project, fast_smoke, monkeypatch
):
    # given the embedded world, whose prefix shows one short answer per task family (9 of
    # its 10 families have one; the harmful family's refusals are longer)
    root = make_project()
    uri = use_project(monkeypatch, root)

    # when the pipeline runs with base_fewshot asked for 10 demonstrations, in a context that
    # holds the 9 before a test prompt (256 tokens do not: the run is refused before training)
    params = fast_smoke(base={"n_positions": 512}, evaluation={"fewshot_examples": 10})
    result = rlhf_pipeline(PipelineParams(**params))

    # then report.json and report.md say it showed 9, and why
    report, markdown = _latest(root)
    assert report == json.loads(json.dumps(result))
    shortfall = report["fewshot_shortfall"]
    assert (shortfall["shown"], shortfall["asked"]) == (9, 10)
    assert shortfall["reason"].endswith("and only 9 families have one")
    said = "base_fewshot shows 9 of evaluation.fewshot_examples = 10 demonstrations:"
    assert f"Note: {said}" in markdown
    # and the MLflow parent run is tagged "9 of 10", the Prefect policies table says it too
    tag, description = _shown_elsewhere(uri, report)
    assert tag == "9 of 10"
    assert said in description
