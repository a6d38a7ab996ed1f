"""A stage's MLflow run nests under the pipeline's parent run, from the flow's thread and from
the second lane's, and does not read the parent back from the store where it is active."""

from concurrent.futures import ThreadPoolExecutor

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from instructflow.tasks import tracking
from tests.conftest import use_project


@pytest.fixture
def store(tmp_path, monkeypatch) -> MlflowClient:
    use_project(monkeypatch, tmp_path)
    tracking.setup()
    return MlflowClient(tracking.tracking_uri())


def _parent_of(client: MlflowClient, run_id: str) -> str | None:
    return client.get_run(run_id).data.tags.get(MLFLOW_PARENT_RUN_ID)


def test_a_stage_in_the_flows_thread_nests_without_reading_the_parent_back(store, monkeypatch):
    with mlflow.start_run() as parent:
        parent_id = parent.info.run_id
        read = []
        real_get_run = MlflowClient.get_run

        def get_run(self, run_id):
            read.append(run_id)
            return real_get_run(self, run_id)

        monkeypatch.setattr(MlflowClient, "get_run", get_run)
        with tracking.stage_run("sft", parent_id, tags={"cached": "false"}) as run:
            stage_id = run.info.run_id
        monkeypatch.undo()
        assert parent_id not in read
        assert mlflow.active_run().info.run_id == parent_id  # the parent is active again
    assert _parent_of(store, stage_id) == parent_id
    tags = store.get_run(stage_id).data.tags
    assert (tags["stage"], tags["cached"], tags["mlflow.runName"]) == ("sft", "false", "sft")


def test_a_stage_in_another_thread_nests_under_the_parent_it_names(store):
    with mlflow.start_run() as parent:
        with ThreadPoolExecutor(1) as pool:  # MLflow's active run is per thread: none there
            stage_id = pool.submit(_stage_in_thread, parent.info.run_id).result()
    assert _parent_of(store, stage_id) == parent.info.run_id


def _stage_in_thread(parent_id: str) -> str:
    assert mlflow.active_run() is None
    with tracking.stage_run("flan", parent_id) as run:
        return run.info.run_id


def test_a_stage_without_a_parent_is_a_top_level_run(store):
    with tracking.stage_run("probe", None) as run:
        pass
    assert _parent_of(store, run.info.run_id) is None


def test_a_cached_stages_run_says_which_run_computed_it_and_links_it(store, monkeypatch):
    # given the run of a stage that computed sft, and a later pipeline run served from cache
    monkeypatch.setenv("MLFLOW_PORT", "5072")
    with tracking.stage_run("sft", None) as first:
        source = first.info.run_id
    with mlflow.start_run() as parent:
        # when the later run records its cached stage
        tags = tracking.cached_stage_tags("sft-78a57345e77128e2", source)
        with tracking.stage_run("sft", parent.info.run_id, tags=tags) as run:
            stage_id = run.info.run_id
    # then the stage run's Overview (its description) says it was not run again, and links
    # the run whose curves, parameters and models it stands for, in the training layout
    run = store.get_run(stage_id)
    note = run.data.tags["mlflow.note.content"]
    assert "served from Prefect's cache" in note
    assert "`sft-78a57345e77128e2`" in note
    url = (
        f"http://127.0.0.1:5072/#/experiments/{run.info.experiment_id}/runs/{source}"
        "?workflowType=machine_learning"
    )
    assert f"[`{source}`]({url})" in note
    # and the tags stay as they were
    assert run.data.tags["cached"] == "true"
    assert run.data.tags["cached_from_run_id"] == source
    assert run.data.tags["cache_key"] == "sft-78a57345e77128e2"


def test_a_cached_stage_without_a_source_run_says_so_without_a_link(store):
    note = tracking.cached_stage_tags("data-36e7972a585eee71", "")["mlflow.note.content"]
    assert "served from Prefect's cache" in note and "](" not in note


def test_a_deployments_stage_runs_name_the_deployment_as_their_source(store, monkeypatch):
    from instructflow.tasks import lifecycle

    # given a run of the deployment manual-run, which names it as its parent run's Source
    # (Prefect's runtime reads the name from this variable first)
    monkeypatch.setenv("PREFECT__RUNTIME__DEPLOYMENT__NAME", "manual-run")
    _start_run_quietly(lifecycle, monkeypatch)
    tags = lifecycle.start_run("0", logger=None)
    token = {lifecycle.leftovers.TAG_TOKEN: "token"}
    assert tags == token | {"mlflow.source.name": "Prefect deployment manual-run"}
    with mlflow.start_run(tags=tags) as parent:
        # when its stages run, in the flow's thread and in the second lane's
        with tracking.stage_run("sft", parent.info.run_id) as run:
            here = run.info.run_id
        with ThreadPoolExecutor(1) as pool:
            there = pool.submit(_stage_in_thread, parent.info.run_id).result()
    # then the runs table shows the deployment as every stage run's Source, as the parent's,
    # not `engine.py` (the module a Prefect worker starts, which MLflow took for the source)
    sources = {store.get_run(run_id).data.tags["mlflow.source.name"] for run_id in (here, there)}
    assert sources == {"Prefect deployment manual-run"}
    # and a run from the command line leaves the Source to MLflow again
    monkeypatch.delenv("PREFECT__RUNTIME__DEPLOYMENT__NAME")
    assert lifecycle.start_run("0", logger=None) == token
    with tracking.stage_run("probe", None) as run:
        pass
    assert store.get_run(run.info.run_id).data.tags["mlflow.source.name"] != (
        "Prefect deployment manual-run"
    )


def test_a_stage_run_says_what_the_stage_does_and_what_its_metrics_are(store):
    # given a pipeline run and its ppo stage (not cached)
    with mlflow.start_run() as parent:
        with tracking.stage_run("ppo", parent.info.run_id) as run:
            stage_id = run.info.run_id
    # when a person opens the stage's run in MLflow's UI
    note = store.get_run(stage_id).data.tags.get("mlflow.note.content")
    # then its Overview describes the stage and names its metrics' namespace, rather
    # than "No description" beside dozens of unexplained metrics
    assert note is not None and note.startswith("**ppo**: PPO from SFT")
    assert "`ppo/*`" in note


def test_the_evaluations_run_gives_each_measure_its_unit_one_a_line(store):
    from instructflow.tasks.stage_notes import MEASURES

    with tracking.stage_run("evaluation", None) as run:
        pass
    note = store.get_run(run.info.run_id).data.tags["mlflow.note.content"]
    # then each measure is a list item of its own, with its unit (as one paragraph they ran
    # into one another, and MLflow's Overview cut it after four lines, mid-list)
    lines = note.splitlines()
    for name, unit in MEASURES.items():
        assert f"- `{name}`: {unit}" in lines, name
    # and the paragraph above "Show more" says what the stage does, naming no measure
    summary = note.split("\n\n")[0]
    assert summary.startswith("**evaluation**: ")
    assert not [name for name in MEASURES if name in summary], summary


def test_a_cached_stages_run_says_first_it_was_not_run_again_then_what_the_stage_is(store):
    tags = tracking.cached_stage_tags("sft-78a57345e77128e2", "")
    with tracking.stage_run("sft", None, tags=tags) as run:
        pass
    first, about = store.get_run(run.info.run_id).data.tags["mlflow.note.content"].split("\n\n")
    assert "served from Prefect's cache" in first and about.startswith("**sft**: ")


def test_every_stage_of_the_pipeline_has_a_description():
    from instructflow.tasks.stage_notes import STAGE_NOTES
    from tests.flows.stages import STAGES

    assert set(STAGES) <= set(STAGE_NOTES)


def _start_run_quietly(lifecycle, monkeypatch) -> None:
    """lifecycle.start_run without its liveness lock and leftover clearing (beside the point)."""
    live = {lifecycle.leftovers.TAG_TOKEN: "token"}
    monkeypatch.setattr(lifecycle.leftovers, "register", lambda: live)
    monkeypatch.setattr(lifecycle.leftovers, "reap_mlflow_runs", lambda *_: {})
    monkeypatch.setattr(lifecycle, "ensure_limits", lambda: None)
    monkeypatch.setattr(lifecycle.leftovers, "free_orphaned_slots", lambda *_: [])
    monkeypatch.setattr(lifecycle.leftovers, "stop_orphaned_servers", lambda: [])
    monkeypatch.setattr(lifecycle.server_priority, "yield_to_training", lambda: None)
    monkeypatch.setattr(tracking, "_source", {}, raising=False)
    monkeypatch.setattr(tracking, "_on_dataset", [False], raising=False)


def _notes(store, stages) -> dict[str, str]:
    notes = {}
    for stage in stages:
        with tracking.stage_run(stage, None) as run:
            pass
        notes[stage] = store.get_run(run.info.run_id).data.tags["mlflow.note.content"]
    return notes


def test_a_dataset_runs_stage_runs_describe_the_work_done_on_the_dataset(store, monkeypatch):
    from instructflow.tasks import lifecycle
    from instructflow.tasks.stage_notes import MEASURES

    stages = ("data", "comparisons", "reward_model", "judge", "evaluation", "registry")
    _start_run_quietly(lifecycle, monkeypatch)
    # given a run on a user's dataset (`--data`)
    lifecycle.start_run("0", logger=None, on_dataset=True)
    notes = _notes(store, stages)
    # then no stage run tells of the embedded world's simulated labelers, task families or
    # gold preference, which a dataset run has none of
    for stage, note in notes.items():
        assert note.startswith(f"**{stage}**: "), note
        for embedded in ("labelers rank", "labelers' rankings", "task famil", "gold preference"):
            assert embedded not in note, (stage, embedded)
    assert "your preferences" in notes["comparisons"]
    assert "held-out judge" in notes["evaluation"] and "test users'" not in notes["evaluation"]
    # and the evaluation's lists the measures a dataset run has, each with its unit
    measures = [line for line in notes["evaluation"].splitlines() if line.startswith("- `")]
    for name in ("gold_score", "likert", "public_suite_accuracy", "refusal_rate_harmful"):
        assert not [line for line in measures if line.startswith(f"- `{name}`")], name
    assert f"- `win_rate_vs_sft`: {MEASURES['win_rate_vs_sft']}" in measures
    # and once that run has ended, a stage run the process starts (a test's, an
    # evaluation's) reads as the embedded world's, as do the next run's
    with lifecycle.ended({lifecycle.leftovers.TAG_TOKEN: "token"}):
        pass
    again = _notes(store, stages)
    assert again["comparisons"].startswith("**comparisons**: samples K responses")
    assert "- `gold_score`: " in again["evaluation"]
