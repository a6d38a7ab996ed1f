"""A checkpoint whose weights a registered version already holds is not registered again:
a scheduled retrain that reproduces the same weights (PPO keeping SFT's, or a setting that
changes a stage's folder but not what it trains) reuses that version."""

import hashlib
import json
from pathlib import Path

from instructflow.tasks import registry, registry_pending, registry_rival
from instructflow.tasks.registry_weights import (
    CHECKPOINT_TAG,
    WEIGHTS_TAG,
    registered_version,
    weights_digest,
)

POLICY, RM = "instructflow-policy-smoke", "instructflow-reward-model-smoke"
CONFIG = {"model_type": "gpt2", "n_layer": 1, "transformers_version": "5.0.0"}


def _checkpoint(
    root: Path, stage_key: str, weights: bytes, config: dict = CONFIG, **files: str
) -> str:
    """A checkpoint folder in the stage output folder `stage_key`: its weights' bytes, its
    config, and any other files (tokenizer, generation config) named in `files`."""
    model_dir = root / "runs" / stage_key / "model"
    model_dir.mkdir(parents=True)
    (model_dir / "model.safetensors").write_bytes(weights)
    (model_dir / "config.json").write_text(json.dumps(config))
    for name, text in files.items():
        (model_dir / name.replace("_", ".", 1)).write_text(text)
    return str(model_dir)


def _register(client, policy_dir: str, rm_dir: str) -> tuple[str, str]:
    lineage = {"profile": "smoke", "seed": 0}
    return registry.register_candidate(client, (POLICY, RM), (policy_dir, rm_dir), lineage, {}, {})


def _run(client, root: Path, run: int, policy: bytes = b"policy") -> tuple[str, str]:
    """Register run `run`'s policy and RM from its own stage folders (ppo-<run>, rm-<run>)."""
    dirs = (_checkpoint(root, f"ppo-{run}", policy), _checkpoint(root, f"rm-{run}", b"rm"))
    return _register(client, *dirs)


def _versions(client, name: str) -> list[str]:
    return sorted(str(v.version) for v in client.search_model_versions(f"name = '{name}'"))


def test_the_digest_is_of_the_weight_bytes_and_the_config_without_its_writer(tmp_path):
    # given a checkpoint: 3 bytes of weights and a config that names the transformers writing it
    folder = Path(_checkpoint(tmp_path, "ppo-a", b"abc"))
    # then its digest is sha256 over "<file>:<sha256 of its bytes, 16 hex>" lines, the config
    # as sorted JSON without transformers_version (worked out by hand here)
    weights = hashlib.sha256(b"abc\0").hexdigest()[:16]
    config = json.dumps({"model_type": "gpt2", "n_layer": 1}, sort_keys=True)
    lines = f"config.json:{config}\nmodel.safetensors:{weights}\n"
    assert weights_digest(folder) == hashlib.sha256(lines.encode()).hexdigest()[:16]


def test_the_digest_follows_the_weights_not_the_folder(tmp_path):
    base = weights_digest(_checkpoint(tmp_path, "ppo-a", b"abc"))
    # the same weights in another stage's folder, written by another transformers, beside
    # another tokenizer and generation config: the same model to the registry
    elsewhere = _checkpoint(
        tmp_path,
        "ppo-b",
        b"abc",
        CONFIG | {"transformers_version": "5.9.9"},
        tokenizer_json="{}",
        generation_config_json='{"max_length": 9}',
    )
    assert weights_digest(elsewhere) == base
    # one weight byte more, or another reward offset in the config (the RM's bias), is not
    assert weights_digest(_checkpoint(tmp_path, "ppo-c", b"abd")) != base
    offset = CONFIG | {"reward_offset": 0.5}
    assert weights_digest(_checkpoint(tmp_path, "rm-d", b"abc", offset)) != base
    # and a folder without weights has no digest
    empty = tmp_path / "runs" / "nothing" / "model"
    empty.mkdir(parents=True)
    assert weights_digest(empty) is None


def test_sharded_weights_are_digested_shard_by_shard(tmp_path):
    folder = tmp_path / "sharded"
    folder.mkdir()
    index = {"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "model-1.safetensors").write_bytes(b"one")
    (folder / "model-2.safetensors").write_bytes(b"two")
    before = weights_digest(folder)
    # a change in the second shard changes the digest
    (folder / "model-2.safetensors").write_bytes(b"TWO")
    assert weights_digest(folder) != before


def test_registering_the_same_weights_twice_makes_one_version(client, tmp_path):
    # given a first run's policy and RM, registered as v1 and v1
    first = _run(client, tmp_path, 1)
    assert first == ("1", "1")
    # when a later run trains the same weights in other stage folders (a changed setting
    # that changed the stages' keys, not what they trained)
    again = _run(client, tmp_path, 2)
    # then no version is added: both are the versions that hold these weights
    assert again == ("1", "1")
    assert _versions(client, POLICY) == ["1"] and _versions(client, RM) == ["1"]
    assert registry.alias_version(client, POLICY, "challenger") == "1"
    # and each version carries its weights' digest as a tag
    policy = client.get_model_version(POLICY, "1")
    assert policy.tags[WEIGHTS_TAG] == weights_digest(tmp_path / "runs" / "ppo-2" / "model")


def test_other_weights_are_a_new_version(client, tmp_path):
    _run(client, tmp_path, 1)
    # a new policy beside the same reward model
    later = _run(client, tmp_path, 2, policy=b"better")
    assert later == ("2", "1")
    assert registry.alias_version(client, POLICY, "challenger") == "2"


def test_a_version_registered_before_digests_is_found_by_its_folder_only(client, tmp_path):
    # given v1 registered (before weight digests) from stage folder ppo-1, and v2 whose
    # tag says other weights came from ppo-2 (the folder was trained again since)
    old = _checkpoint(tmp_path, "ppo-1", b"old")
    client.create_registered_model(POLICY)
    client.create_model_version(POLICY, old, tags={CHECKPOINT_TAG: "ppo-1"})
    again = _checkpoint(tmp_path, "ppo-2", b"now")
    tags = {CHECKPOINT_TAG: "ppo-2", WEIGHTS_TAG: "0123456789abcdef"}
    client.create_model_version(POLICY, again, tags=tags)
    # then ppo-1's checkpoint is v1 (no digest to contradict it), ppo-2's is no version
    assert registered_version(client, POLICY, old) == "1"
    assert registered_version(client, POLICY, again) is None


def test_a_champion_holding_the_candidates_weights_is_not_its_rival(client, tmp_path):
    # given v1, champion, registered from stage folder ppo-1
    _run(client, tmp_path, 1)
    client.set_registered_model_alias(POLICY, "champion", "1")
    # when a later run's candidate has the same weights in another folder
    candidate = _checkpoint(tmp_path, "ppo-2", b"policy")
    # then the gate does not play the champion against itself: its bar is SFT
    assert registry_rival.rival_champion(client, candidate, POLICY) is None
    assert registry_rival.gate_opponent(client, candidate, POLICY) == f"{POLICY} sft"
    # and a candidate with other weights plays the champion
    other = _checkpoint(tmp_path, "ppo-3", b"other")
    assert registry_rival.rival_champion(client, other, POLICY) == "1"


def test_a_result_naming_the_version_that_holds_its_weights_is_not_stale(client, tmp_path):
    _run(client, tmp_path, 1)
    dirs = (_checkpoint(tmp_path, "ppo-2", b"policy"), _checkpoint(tmp_path, "rm-2", b"rm"))
    result = {"policy_version": "1", "reward_model_version": "1"}
    assert registry_rival.registry_moved(client, result, (POLICY, RM), dirs) is None


def test_a_failed_stage_puts_back_what_it_wrote_to_the_version_it_reused(client, tmp_path):
    from instructflow.tasks.registry_snapshot import RegistrySnapshot

    # given v1 with its card and a tag, champion
    _run(client, tmp_path, 1)
    client.update_model_version(POLICY, "1", description="v1's card")
    client.set_model_version_tag(POLICY, "1", "gate_promote", "True")
    before = client.get_model_version(POLICY, "1")
    snapshot = RegistrySnapshot.take(client, [POLICY, RM])
    # when a later stage reuses v1 for the same weights and writes to it before failing
    _run(client, tmp_path, 2)
    client.set_model_version_tag(POLICY, "1", "gate_promote", "False")
    client.set_model_version_tag(POLICY, "1", "gate_reason", "a later run's")
    client.update_model_version(POLICY, "1", description="a later run's card")
    snapshot.restore(client)
    # then v1's tags and card are what they were
    after = client.get_model_version(POLICY, "1")
    assert after.tags == before.tags and after.description == "v1's card"


def test_the_report_and_the_card_say_which_version_holds_the_weights(tmp_path):
    from instructflow.tasks.model_card import model_card
    from instructflow.tasks.report import run_summary

    # given a gate that acted on v3, which already held the candidate's weights
    policy_dir = _checkpoint(tmp_path, "ppo-2", b"policy")
    block = registry.registered_block(POLICY, "3", policy_dir)
    digest = weights_digest(policy_dir)
    assert block == {
        "registered": "existing",
        "weights_digest": digest,
        "note_registered": f"{POLICY} v3 already holds these weights (weights digest {digest}): "
        "no new version registered; the gate acted on v3",
    }
    gate = _unpromoted_gate(0.5) | {"model_name": POLICY, "policy_version": "3"}
    gate |= {"promote": False, "champion": "3"} | block
    # then the run's summary (the MLflow run's overview and report.md) and v3's card say so
    line = f"- registered: {block['note_registered']}"
    assert line in run_summary({"status": "completed", "gate": gate}).splitlines()
    assert line in model_card(POLICY, "3", {}, {}, gate).splitlines()
    # and a new version says nothing of the kind
    new = registry.registered_block(POLICY, None, policy_dir)
    assert new == {"registered": "new", "weights_digest": digest}


def _unpromoted_gate(win_rate: float) -> dict:
    """A gate block that played SFT on 12 prompts and did not promote, at `win_rate` +- 0.1."""
    return {
        "incumbent": "sft",
        "evidence": "held-out labelers",
        "prompts": 12,
        "win_rate": {
            "mean": win_rate,
            "ci95": [round(win_rate - 0.1, 2), round(win_rate + 0.1, 2)],
        },
        "public_suite": {"challenger": 0.5, "incumbent": 0.5},
        "promoted": False,
        "reason": "no better than sft",
    }


def _lineage(run: str) -> dict:
    """Run `run`'s lineage, as a pipeline run tags its versions."""
    return {
        "profile": "smoke",
        "seed": 0,
        "git_commit": f"commit-{run}",
        "dvc_data_md5": f"data-{run}",
        "prefect_flow_run_id": f"prefect-{run}",
        "prefect_flow_run_url": f"http://prefect/{run}",
        "mlflow_parent_run_id": f"mlflow-{run}",
        "mlflow_parent_run_url": f"http://mlflow/{run}",
    }


def test_a_reused_version_keeps_its_origin_and_names_the_run_that_confirmed_it(client, tmp_path):
    from instructflow.tasks.model_card import model_card, registry_status

    # given run a registered v1 (policy and RM), and run b trained the same weights again
    dirs_a = (_checkpoint(tmp_path, "ppo-a", b"policy"), _checkpoint(tmp_path, "rm-a", b"rm"))
    dirs_b = (_checkpoint(tmp_path, "ppo-b", b"policy"), _checkpoint(tmp_path, "rm-b", b"rm"))
    names = (POLICY, RM)
    figures_a, figures_b = {"win_rate_vs_sft": 0.6, "policy": "ppo"}, {"win_rate_vs_sft": 0.55}
    registry.register_candidate(client, names, dirs_a, _lineage("a"), figures_a, {"acc": 0.7})
    registry_pending.finish(client, [(POLICY, "1"), (RM, "1")])  # as run a's stage ends
    held = registered_version(client, POLICY, dirs_b[0])
    versions = registry.register_candidate(
        client, names, dirs_b, _lineage("b"), figures_b | {"policy": "ppo_ptx"}, {"acc": 0.71}
    )
    assert held == "1" and versions == ("1", "1")
    registry_pending.finish(client, [(POLICY, "1"), (RM, "1")])  # as run b's stage ends
    # then v1's lineage tags are still run a's: the run whose code and data made the weights
    tags = client.get_model_version(POLICY, "1").tags
    for key in ("git_commit", "dvc_data_md5", "prefect_flow_run_id", "mlflow_parent_run_id"):
        assert tags[key] == _lineage("a")[key]
        # and run b, which trained them again, is named beside it
        assert tags[f"last_confirmed_by_{key}"] == _lineage("b")[key]
    # and its figures are run b's, as the gate's tags and the card run b writes are
    assert tags["win_rate_vs_sft"] == "0.55" and tags["policy"] == "ppo_ptx"
    # and the reused RM names run b too, its figures and card still run a's (no gate)
    rm = client.get_model_version(RM, "1")
    assert rm.tags["git_commit"] == "commit-a" and rm.tags["acc"] == "0.7"
    assert rm.tags["last_confirmed_by_mlflow_parent_run_id"] == "mlflow-b"
    assert "commit-b" not in rm.description

    # when run b writes v1's card
    gate = _unpromoted_gate(0.55) | {"candidate": "ppo_ptx"}
    gate |= registry.registered_block(POLICY, held, dirs_b[0])
    card = model_card(POLICY, "1", _lineage("b"), figures_b, gate, tags)
    # then it says where the weights come from (run a) apart from who confirmed them (run b)
    origin, confirmed = card.split("## Last confirmed by")
    assert "- git commit: `commit-a`" in origin
    assert "- MLflow parent run: [`mlflow-a`](http://mlflow/a)" in origin
    assert "commit-b" not in origin and "ppo_ptx" not in origin
    assert "the evaluation and the promotion gate below are its" in confirmed
    assert "- git commit: `commit-b`" in confirmed and "- policy: `ppo_ptx`" in confirmed
    assert "- MLflow parent run: [`mlflow-b`](http://mlflow/b)" in confirmed
    assert "commit-a" not in confirmed
    # and a version registered once has one origin and no such section
    fresh = model_card(POLICY, "1", _lineage("a"), figures_a, gate | {"note_registered": None})
    assert "Last confirmed by" not in fresh

    # and the registry's status credits run b's gate with the decision its tags hold
    decided = tags | {"gate_reason": "no better than sft", "gate_promote": "False"}
    status = registry_status(POLICY, {"1": decided}, {"challenger": "1"})
    assert "(latest: v1, no better than sft)" in status
    v0 = _lineage("z") | {"gate_promote": "True", "promoted_by": "gate"}
    status = registry_status(POLICY, {"1": v0, "2": decided}, {"champion": "1", "challenger": "2"})
    assert "Challenger: v2 (run [`mlflow-b`](http://mlflow/b)): no better than sft" in status
    # and a champion run b's gate reused but did not promote again says who promoted it
    kept = decided | {"promoted_by": "gate"}
    status = registry_status(POLICY, {"1": kept}, {"champion": "1", "challenger": "1"})
    assert (
        "**Champion: v1**, promoted by an earlier gate (the gate of run "
        "[`mlflow-b`](http://mlflow/b) reused this version and left it champion: "
        "no better than sft)"
    ) in status


def test_a_reward_model_left_without_its_card_by_a_killed_run_gets_it_from_its_origin(
    client, tmp_path
):
    # given run a registered the RM and was killed before writing its card (while the
    # policy was being logged): a version with its tags and no description
    rm_a = _checkpoint(tmp_path, "rm-a", b"rm")
    registry._register(rm_a, RM, "reward_model", _lineage("a") | {"acc": 0.7})
    assert not client.get_model_version(RM, "1").description
    # when run b, the same command again, trains the same weights and registers its candidate
    dirs_b = (_checkpoint(tmp_path, "ppo-b", b"policy"), _checkpoint(tmp_path, "rm-b", b"rm"))
    versions = registry.register_candidate(
        client, (POLICY, RM), dirs_b, _lineage("b"), {}, {"acc": 0.71}
    )
    # then the reused RM v1 has its card, of run a (whose tags it carries), not run b's
    assert versions == ("1", "1")
    card = client.get_model_version(RM, "1").description
    assert card.startswith(f"# {RM} v1") and f"beside {POLICY} v1" in card
    assert "- git commit: `commit-a`" in card and "- acc: 0.700" in card
    assert "commit-b" not in card
    # and a card once written is not written again by a later run
    registry.register_candidate(client, (POLICY, RM), dirs_b, _lineage("c"), {}, {"acc": 0.9})
    assert client.get_model_version(RM, "1").description == card


def test_a_second_version_registers_without_mlflows_already_exists_line(client, tmp_path, capfd):
    # given a registered model with a version
    _run(client, tmp_path, 1)
    capfd.readouterr()
    # when a later run registers other weights in it
    assert _run(client, tmp_path, 2, policy=b"better") == ("2", "1")
    # then nothing is printed about the registered model existing (it is expected to)
    out, err = capfd.readouterr()
    assert "already exists" not in out + err, out + err
    assert _versions(client, POLICY) == ["1", "2"]
