"""A dataset run's registry stage (flows/dataset_gate.py) writes the card's run links and the
candidate's note, the reward model's lineage and card, and where `champion` stands."""

from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from instructflow.flows import dataset_gate
from instructflow.flows.params import PipelineParams
from instructflow.tasks import outages, registry, tracking
from tests.conftest import use_project
from tests.tasks.test_lost_tracking_server import Server

NOTE = "ppo kept its starting weights (SFT's): ..."


def test_a_refused_dataset_gate_links_the_runs_and_says_there_is_no_champion(
    tiny_dirs, tmp_path, monkeypatch
):
    # given an empty registry, a dataset run's parent run and a candidate the judge does not prefer
    monkeypatch.delenv("INSTRUCTFLOW_MLFLOW_UI", raising=False)
    params, inputs = _dataset_run(tiny_dirs, tmp_path, monkeypatch, candidate_note=NOTE)
    with mlflow.start_run(run_name="parent") as parent:
        run_id, experiment_id = parent.info.run_id, parent.info.experiment_id
        result = {
            "run": {
                "mlflow_run_id": run_id,
                "git_commit": "cafe",
                "prefect_flow_run_id": "7f0c",
                "dvc_data_md5": "0123abcd",
            },
            "dataset": {"tables": {"comparisons": {"md5": "beef"}}, "split_rule": "user_id"},
            "policies": {"ppo": {"win_rate_vs_sft": {"mean": 0.5, "ci95": [0.4, 0.6]}}},
            "judge": {"accuracy_heldout_pairs": 0.9, "test_pairs": 200},
            "reward_model": {"accuracy": 0.75},
        }
        # when its registry stage runs
        gate, gate_run = dataset_gate.register_and_gate(params, result, inputs)
    client = MlflowClient()
    # and the registry stage's run it returns (the approval form links it) is the parent's child
    assert client.get_run(gate_run.info.run_id).data.tags["mlflow.parentRunId"] == run_id
    # then the card links both runs and says the candidate is SFT's weights
    card = client.get_model_version(gate["model_name"], gate["policy_version"]).description
    mlflow_url = f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
    assert f"- MLflow parent run: [`{run_id}`]({mlflow_url})" in card
    assert "- Prefect flow run: [`7f0c`](http://" in card and "/runs/flow-run/7f0c)" in card
    assert f"- policy: `ppo` (the run's candidate)\n- note: {NOTE}\n" in card
    # and the reward model has the run's lineage, its figures and a card
    rm_name = params.registry.names(params.profile, params.data)[1]
    rm = client.get_model_version(rm_name, gate["reward_model_version"])
    assert rm.tags["dvc_data_md5"] == "0123abcd" and rm.tags["mlflow_parent_run_id"] == run_id
    assert rm.tags["accuracy"] == "0.75"
    assert f"registered beside {gate['model_name']} v{gate['policy_version']}" in rm.description
    # and the registered model says there is no champion yet, and why
    status = client.get_registered_model(gate["model_name"]).description
    assert (
        f"**No champion yet**: no version has passed the gate (latest: v1, {gate['reason']})"
        in (status)
    )


def _dataset_run(tiny_dirs, tmp_path, monkeypatch, candidate_note=None):
    """A project with an MLflow store, a dataset folder `prefs` and the gate's inputs (tiny
    models as candidate and RM); the registry slot and model logging stubbed."""
    use_project(monkeypatch, tmp_path)
    tracking.setup()
    monkeypatch.setattr(dataset_gate, "registry_slot", nullcontext)  # no Prefect server here
    monkeypatch.setattr(registry, "LOGGERS", {k: _logged for k in ("policy", "reward_model")})
    sft_dir, rm_dir = tiny_dirs
    data = tmp_path / "prefs"
    data.mkdir()
    inputs = dataset_gate.GateInputs(
        candidate="ppo",
        policy_dir=str(_copy(sft_dir, tmp_path / "runs" / "ppo-1" / "model")),
        rm_dir=str(_copy(rm_dir, tmp_path / "runs" / "rm-1" / "model")),
        sft_run_id="sft-run",
        profile_dir=tmp_path,
        judge_dir=tmp_path,
        candidate_note=candidate_note,
    )
    return PipelineParams(profile="smoke", data=str(data)), inputs


def _champion_tagged(params, inputs, monkeypatch, tags: dict) -> str:
    """A registered champion (v1) with `tags`, for the dataset's policy model; the match
    against it stubbed (the judge's verdict is not what these tests check)."""
    name = params.registry.names(params.profile, params.data)[0]
    client = MlflowClient()
    client.create_registered_model(name)
    theirs = client.create_model_version(name, inputs.policy_dir, tags=tags)
    client.set_registered_model_alias(name, "champion", theirs.version)
    rival = ("champion v1", {"mean": 0.4, "ci95": [0.3, 0.5]}, 10)
    monkeypatch.setattr(dataset_gate, "_rival", lambda *args: rival)
    return name


def _logged(model_dir: str, _name: str):
    """Registering logs no model here: the checkpoint folder is the version's source."""
    return type("Logged", (), {"model_uri": model_dir})


def _copy(src: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(src, dest)
    return dest


def test_a_champion_trained_on_another_folder_of_the_same_name_is_named_in_the_gate(
    tiny_dirs, tmp_path, monkeypatch
):
    # given a champion of instructflow-policy-prefs-smoke trained on /elsewhere/prefs
    params, inputs = _dataset_run(tiny_dirs, tmp_path, monkeypatch)
    data = Path(params.data)
    name = _champion_tagged(params, inputs, monkeypatch, {"data_dir": "/elsewhere/prefs"})
    # when a run on ./prefs (another dataset, the same folder name) reaches its gate
    with mlflow.start_run(run_name="parent") as parent:
        gate, _ = dataset_gate.register_and_gate(params, _result(parent.info.run_id), inputs)
    # then the gate's note says whose champion it played and how to keep them apart
    assert gate["note"].startswith(
        f"champion v1 of {name} was trained on /elsewhere/prefs, this run on {data.resolve()}"
    )
    assert "registry.model_name" in gate["note"]


def test_a_champion_from_another_base_model_is_said_to_be_no_like_for_like_rival(
    tiny_dirs, tmp_path, monkeypatch
):
    # given a champion trained from another base model than this run's
    params, inputs = _dataset_run(tiny_dirs, tmp_path, monkeypatch)
    params = params.model_copy(update={"base_model": str(tiny_dirs[0])})
    name = _champion_tagged(params, inputs, monkeypatch, {"base_model": "/models/other-base"})
    # when this run reaches its gate
    with mlflow.start_run(run_name="parent") as parent:
        gate, _ = dataset_gate.register_and_gate(params, _result(parent.info.run_id), inputs)
    # then the gate's reason says, naming both, that the comparison is not like for like
    assert gate["reason"].endswith(
        "; not like for like: champion v1 was trained from base model /models/other-base, "
        f"the candidate from {tiny_dirs[0]}"
    )
    version = MlflowClient().get_model_version(name, gate["policy_version"])
    assert version.tags["gate_reason"] == gate["reason"]


def test_a_candidate_with_sfts_own_weights_is_not_promoted_on_a_lucky_judge_verdict(
    tiny_dirs, tmp_path, monkeypatch
):
    # given an empty registry, a trustworthy judge, and a candidate whose win over SFT clears
    # the bar by sampling noise alone: PPO kept SFT's weights (0.621 [0.515, 0.727], seen)
    params, inputs = _dataset_run(tiny_dirs, tmp_path, monkeypatch, candidate_note=NOTE)
    kept = replace(inputs, sft_dir=str(tiny_dirs[0]))
    lucky = {"mean": 0.621, "ci95": [0.515, 0.727]}

    def gate_of(inputs) -> dict:
        with mlflow.start_run(run_name="parent") as parent:
            result = {
                "run": {"mlflow_run_id": parent.info.run_id, "git_commit": "cafe",
                        "prefect_flow_run_id": "7f0c", "dvc_data_md5": "0123abcd"},
                "dataset": {"tables": {}, "split_rule": "prompt_hash"},
                "policies": {"ppo": {"win_rate_vs_sft": lucky}},
                "judge": {"accuracy_heldout_pairs": 0.9, "test_pairs": 200},
            }  # fmt: skip
            return dataset_gate.register_and_gate(params, result, inputs)[0]

    # when its registry stage runs, then the gate refuses: SFT cannot beat itself
    gate = gate_of(kept)
    assert not gate["promote"]
    assert gate["reason"] == "the candidate holds sft's own weights: it cannot beat itself"
    assert gate["candidate_holds_incumbent_weights"] is True  # recorded for `eval import`
    # and the same verdict for weights other than SFT's promotes (the RM's stand in for them)
    other = gate_of(replace(inputs, sft_dir=str(tiny_dirs[1])))
    assert other["promote"] and other["candidate_holds_incumbent_weights"] is False


def _result(run_id: str) -> dict:
    return {
        "run": {
            "mlflow_run_id": run_id,
            "git_commit": "cafe",
            "prefect_flow_run_id": "7f0c",
            "dvc_data_md5": "0123abcd",
        },
        "dataset": {"tables": {}, "split_rule": "user_id"},
        "policies": {"ppo": {"win_rate_vs_sft": {"mean": 0.5, "ci95": [0.4, 0.6]}}},
        "judge": {"accuracy_heldout_pairs": 0.9, "test_pairs": 200},
        "reward_model": {},
    }


def test_a_dataset_gate_that_fails_recording_its_decision_leaves_the_registry_as_found(
    tiny_dirs, tmp_path, monkeypatch
):
    # given an empty registry, and the gate's figures failing to reach the stage's run
    params, inputs = _dataset_run(tiny_dirs, tmp_path, monkeypatch)

    def fails(*_args, **_kwargs):
        raise RuntimeError("the store refused the gate's figures")

    monkeypatch.setattr(registry, "record_gate", fails)
    # when the registry stage runs, it fails
    with mlflow.start_run(run_name="parent") as parent:
        with pytest.raises(RuntimeError, match="refused the gate's figures"):
            dataset_gate.register_and_gate(params, _result(parent.info.run_id), inputs)
    # then no version of the failed stage is left behind
    assert MlflowClient().search_model_versions() == []


def test_a_server_lost_as_the_dataset_gate_ends_its_run_is_waited_for(
    tiny_dirs, tmp_path, monkeypatch
):
    # given a tracking server that goes away as the registry stage's run ends, back soon after
    params, inputs = _dataset_run(tiny_dirs, tmp_path, monkeypatch)
    server = Server(monkeypatch)
    real = registry.record_gate

    def record_then_lose(*args, **kwargs):
        metrics = real(*args, **kwargs)
        server.lost_as_a_run_ends, server.back_after_probes = True, server.probes + 2
        return metrics

    monkeypatch.setattr(registry, "record_gate", record_then_lose)
    monkeypatch.setattr(outages, "OUTAGE_WAIT_SECONDS", 60.0)
    # when the registry stage runs
    with mlflow.start_run(run_name="parent") as parent:
        gate, gate_run = dataset_gate.register_and_gate(params, _result(parent.info.run_id), inputs)
    # then its end waited for the server: the run is FINISHED and the version stays
    client = MlflowClient()
    assert client.get_run(gate_run.info.run_id).info.status == "FINISHED"
    assert client.get_model_version(gate["model_name"], gate["policy_version"])


def test_a_champion_moved_while_the_dataset_gate_played_stays_where_it_was_moved(
    tiny_dirs, tmp_path, monkeypatch
):
    # given champion v1, a version v2 a person may pick, and a match the candidate wins
    params, inputs = _dataset_run(tiny_dirs, tmp_path, monkeypatch)
    name = _champion_tagged(params, inputs, monkeypatch, {})
    client = MlflowClient()
    other = str(client.create_model_version(name, inputs.rm_dir).version)

    def won_while_champion_moved(*_args):
        # a person moves champion (MLflow's UI takes no registry slot) during the match
        client.set_registered_model_alias(name, "champion", other)
        return "champion v1", {"mean": 0.8, "ci95": [0.7, 0.9]}, 10

    monkeypatch.setattr(dataset_gate, "_rival", won_while_champion_moved)
    # when the registry stage runs
    with mlflow.start_run(run_name="parent") as parent:
        gate, run = dataset_gate.register_and_gate(params, _result(parent.info.run_id), inputs)
    # then the candidate is registered, but champion stays on v2, which it never played
    assert gate["policy_version"] == "3" and gate["champion"] == "2"
    assert registry.champion_version(client, name) == "2"
    # and the gate block and the version's tags say promote false, and why, plainly
    assert not gate["promote"] and not gate["promoted"] and not gate["awaiting_approval"]
    assert gate["reason"].startswith(
        "champion moved to v2 while this run was gating; run again to gate against it "
        "(beats champion v1: "
    )
    assert client.get_model_version(name, "3").tags["gate_reason"] == gate["reason"]
    # and the rule, which passed, is tagged held back, not rejected (the version and the run)
    assert (
        gate["held_back"] and client.get_model_version(name, "3").tags["gate_held_back"] == "True"
    )
    assert mlflow.get_run(run.info.run_id).data.tags["gate_decision"] == "held back"
