"""The registry stage judges first and writes after: a failing gate leaves the registry as it was,
and a champion that cannot be loaded is skipped with a one-line reason."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from instructflow.tasks import promotion, registry, registry_pending, registry_rival, tracking
from instructflow.tasks.evaluation import EvalConfig
from instructflow.tasks.gate import GateConfig
from instructflow.tasks.registry_config import RegistryConfig
from tests.tasks.test_evaluation import _foreign_policy

POLICY, RM = RegistryConfig().names("tiny")


def _state(client: MlflowClient) -> dict:
    """Every registered model's versions and aliases."""
    out = {}
    for model in client.search_registered_models():
        versions = sorted(v.version for v in client.search_model_versions(f"name = '{model.name}'"))
        out[model.name] = (versions, dict(model.aliases))
    return out


class Gate:
    def __init__(self, root: Path, dirs: tuple[Path, Path], profile_dir: Path):
        self.root, self.profile_dir = root, profile_dir
        self.sft_dir, self.rm_dir = dirs
        self.client = MlflowClient()
        self.calls = 0

    def run(self, policy_dir: Path, cfg: GateConfig | None = None, lineage=None) -> dict:
        self.calls += 1
        with mlflow.start_run(run_name=f"parent-{self.calls}") as parent:
            return registry.register_and_gate_task.fn(
                candidate="ppo_ptx",
                policy_dir=str(policy_dir),
                rm_dir=str(self.rm_dir),
                sft_dir=str(self.sft_dir),
                profile_dir=str(self.profile_dir),
                eval_cfg=EvalConfig(max_new_tokens=8, samples_per_prompt=1),
                cfg=cfg or GateConfig(max_prompts=12),
                model_name=POLICY,
                reward_model_name=RM,
                lineage=lineage or {"profile": "smoke", "dvc_data_md5": "test"},
                policy_metrics={},
                rm_metrics={},
                seed=0,
                out_dir=str(self.root / "runs" / f"registry-{self.calls}"),
                parent_run_id=parent.info.run_id,
            )


@pytest.fixture
def gate(prefect_harness, tiny_dirs, generated_root, tmp_path, monkeypatch) -> Gate:
    """A fresh project root whose registry holds v1 (the tiny SFT checkpoint) as champion."""
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracking.setup()
    gate = Gate(tmp_path, tiny_dirs, generated_root / "data" / "smoke")
    gate.first = gate.run(tiny_dirs[0])
    promotion.promote_manually(gate.first["policy_version"], "test champion", POLICY)
    return gate


def test_a_failure_while_writing_puts_the_registry_back(gate, tmp_path, monkeypatch):
    # given a registry with a champion, and a new candidate from another base model
    before = _state(gate.client)
    candidate = _foreign_policy(tmp_path / "foreign", gate.profile_dir)

    # when the gate fails after the versions were registered (recording the decision)
    def broken(*_args, **_kwargs):
        raise RuntimeError("injected failure while recording the decision")

    monkeypatch.setattr(registry, "record_decision", broken)
    with pytest.raises(RuntimeError, match="injected"):
        gate.run(candidate)
    # then the registry's versions and aliases are exactly as before
    assert _state(gate.client) == before


def test_a_failure_while_judging_writes_nothing(gate, tmp_path, monkeypatch):
    before = _state(gate.client)
    candidate = _foreign_policy(tmp_path / "foreign", gate.profile_dir)

    def broken(*_args, **_kwargs):
        raise RuntimeError("injected failure in the head-to-head")

    monkeypatch.setattr(registry, "head_to_head", broken)
    with pytest.raises(RuntimeError, match="injected"):
        gate.run(candidate)
    assert _state(gate.client) == before


def test_a_champion_from_another_tokenizer_is_played_as_text(gate, tmp_path):
    # given champion v1 (the tiny GPT-2) and a candidate with another, larger tokenizer
    candidate = _foreign_policy(tmp_path / "foreign", gate.profile_dir)
    # when the gate runs
    result = gate.run(candidate)
    # then it played the champion, and the new version is the one challenger
    assert result["gate"]["incumbent"] == "champion v1"
    assert result["gate"]["note"] is None
    assert result["policy_version"] == "2"
    assert str(gate.client.get_model_version_by_alias(POLICY, "challenger").version) == "2"
    # and the version carries the lineage tags and a model card naming what it played
    version = gate.client.get_model_version(POLICY, "2")
    for tag in ("profile", "dvc_data_md5", "tokenizer_digest", "gate_incumbent"):
        assert version.tags.get(tag), tag
    assert version.tags["gate_evidence"] == result["gate"]["evidence"] == "held-out labelers"
    assert "played: champion v1" in version.description


def test_a_champion_from_another_base_model_is_said_to_be_no_like_for_like_rival(gate, tmp_path):
    from instructflow.tasks.gate import GateDecision, gate_markdown

    # given champion v1 trained from the embedded GPT-2, and a candidate from another base
    gate.client.set_model_version_tag(POLICY, "1", "base_model", "embedded GPT-2 (smoke)")
    candidate = _foreign_policy(tmp_path / "foreign", gate.profile_dir)
    lineage = {"profile": "smoke", "dvc_data_md5": "test", "base_model": "foreign-lm"}
    # when the gate plays them
    result = gate.run(candidate, lineage=lineage)
    # then its decision says, in one line naming both, that they are not like for like
    line = (
        "not like for like: champion v1 was trained from base model embedded GPT-2 (smoke), "
        "the candidate from foreign-lm"
    )
    reason = result["decision"]["reason"]
    assert reason.endswith(f"; {line}") and "\n" not in reason
    assert result["gate"]["reason"] == reason
    version = gate.client.get_model_version(POLICY, result["policy_version"])
    assert version.tags["gate_reason"] == reason
    # and the promotion-gate artifact words it so
    decision = GateDecision(**result["decision"])
    assert f"- reason: {reason}\n" in gate_markdown(POLICY, "2", decision, result["gate"])


def test_a_champion_that_cannot_be_loaded_is_skipped_with_its_reason(gate, tmp_path):
    # given a champion whose stored checkpoint is gone
    stored = list((tmp_path / "mlflow" / "artifacts").rglob("config.json"))
    assert stored
    for config in stored:
        shutil.rmtree(config.parent, ignore_errors=True)
    candidate = _foreign_policy(tmp_path / "foreign", gate.profile_dir)
    # when the gate runs
    result = gate.run(candidate)
    # then it says which version it could not compare, plays SFT instead, and says so
    note = result["gate"]["note"]
    assert note.startswith(f"{POLICY} v1 (champion) cannot be compared: ")
    assert note.endswith("the gate played sft") and "\n" not in note
    assert result["gate"]["incumbent"] == "sft"
    # and the registry stays consistent: the judged candidate is the challenger, v1 still champion
    assert str(gate.client.get_model_version_by_alias(POLICY, "challenger").version) == "2"
    assert str(registry.champion_version(gate.client, POLICY)) == "1"


def test_the_gate_says_which_margin_it_used_and_where_from(gate, tmp_path):
    # given a sweep aggregate that measured 0.3 of seed noise between two seeds
    sweep = tmp_path / "aggregate.json"
    noise = {"policy": "ppo_ptx", "win_margin": 0.3, "pairs": [{"seeds": [0, 1], "win_rate": 0.2}]}
    sweep.write_text(
        json.dumps({"gate_noise": noise, "sweep": {"mlflow_run_id": "sweep-1"}, "provenance": {}})
    )
    # when the gate judges with its margin taken from that sweep
    cfg = GateConfig(max_prompts=12, win_margin=0.01, win_margin_from=str(sweep))
    result = gate.run(gate.sft_dir, cfg=cfg)
    # then its evidence names the margin and the sweep it came from, and the bar it set
    assert result["gate"]["win_margin"] == 0.3
    assert "sweep-1" in result["gate"]["win_margin_source"]
    assert str(sweep) in result["gate"]["win_margin_source"]
    assert not result["gate"]["promote"]
    assert "0.5 + 0.300 (seed noise)" in result["gate"]["reason"]


def test_a_registry_result_goes_stale_when_the_registry_moves_on(gate, tmp_path):
    dirs = (str(gate.sft_dir), str(gate.rm_dir))
    moved = lambda result: registry_rival.registry_moved(gate.client, result, (POLICY, RM), dirs)  # noqa: E731
    # given the first run's result as the registry holds it (v1 was then promoted by hand)
    first = gate.first | {"champion": "1"}
    assert moved(first) is None
    # when a later run's candidate becomes the challenger
    candidate = _foreign_policy(tmp_path / "foreign", gate.profile_dir)
    later = gate.run(candidate)
    # then the first result no longer holds, and says why
    assert moved(first) == f"{POLICY}'s challenger is v2, not this run's v1"
    # and once the alias is back, it holds again
    gate.client.set_registered_model_alias(POLICY, "challenger", "1")
    assert moved(first) is None
    # and a result whose version was deleted from the registry is stale too
    gate.client.delete_model_version(POLICY, "1")
    assert moved(first) == f"{POLICY} v1 (this run's checkpoint) is no longer registered"
    assert later["policy_version"] == "2"


def test_a_registry_result_goes_stale_when_champion_moves_by_hand(gate):
    # given the first run's result, which reports no champion, and v1 since promoted by hand
    # (the gate's opponent stays SFT: a champion holding the candidate's weights is not played)
    dirs = (str(gate.sft_dir), str(gate.rm_dir))
    moved = lambda result: registry_rival.registry_moved(gate.client, result, (POLICY, RM), dirs)  # noqa: E731
    assert gate.first["champion"] is None
    # then that result is stale: a cached report would say there is no champion
    assert moved(gate.first) == f"{POLICY}'s champion is v1, not none"
    # and a result that reports v1 as champion holds, until the alias is taken away
    assert moved(gate.first | {"champion": "1"}) is None
    gate.client.delete_registered_model_alias(POLICY, "champion")
    assert moved(gate.first | {"champion": "1"}) == f"{POLICY}'s champion is none, not v1"


def test_the_champions_weights_again_reuse_its_version_and_it_stays_champion(gate, tmp_path):
    # given champion v1 (the tiny SFT checkpoint), and a later run whose candidate is the same
    # weights in another stage's folder (PPO kept SFT's weights, under other settings)
    again = tmp_path / "runs" / "ppo-other-settings" / "model"
    shutil.copytree(gate.sft_dir, again)
    # when the gate runs
    result = gate.run(again)
    # then no version is added: v1 is the candidate, it was not played against itself
    assert _state(gate.client)[POLICY][0] == [1]
    assert result["policy_version"] == "1"
    assert result["gate"]["incumbent"] == "sft"
    # and it stays champion, now also challenger, and the report says which version it is
    assert registry.champion_version(gate.client, POLICY) == "1"
    assert registry.alias_version(gate.client, POLICY, "challenger") == "1"
    assert result["gate"]["registered"] == "existing"
    assert result["gate"]["note_registered"].startswith(
        f"{POLICY} v1 already holds these weights (weights digest "
    )
    run = gate.client.get_run(result["mlflow_run_id"])
    assert run.data.tags["policy_registered"] == "existing"
    assert run.data.tags["policy_version"] == "1"
    # while the first run registered it as new
    assert gate.first["gate"]["registered"] == "new"


class Killed(BaseException):
    """A SIGKILL, as the registry sees it: the process stops and no handler puts anything back."""


def _killed_while_writing_its_card(gate: Gate, candidate: Path, monkeypatch) -> None:
    """Run the gate on `candidate`, passing it whatever the match says, and kill the run after
    its decision was recorded, while its card was being written."""
    with monkeypatch.context() as patched:

        def killed(*_args, **_kwargs):
            raise Killed

        patched.setattr(registry, "write_card", killed)
        patched.setattr(registry.RegistrySnapshot, "restore_after", lambda *_a: None)
        with pytest.raises(Killed):
            gate.run(candidate)


def _passing(monkeypatch) -> None:
    real = registry.decide
    passed = lambda *a: replace(real(*a), promote=True, reason="passed (test)")  # noqa: E731
    monkeypatch.setattr(registry, "decide", passed)


def test_a_run_killed_while_writing_leaves_no_half_written_champion(gate, tmp_path, monkeypatch):
    # given a champion v1, and a candidate whose gate passes
    _passing(monkeypatch)
    candidate = _foreign_policy(tmp_path / "foreign", gate.profile_dir)
    # when its run is killed after the gate's decision was recorded, before the card was written
    _killed_while_writing_its_card(gate, candidate, monkeypatch)
    # then its version is there, marked as being written, and `champion` did not move to it
    version = gate.client.get_model_version(POLICY, "2")
    assert version.tags[registry_pending.WRITE_TAG] == registry_pending.WRITING
    assert str(registry.champion_version(gate.client, POLICY)) == "1"

    # when the next run's candidate is another checkpoint
    other = tmp_path / "runs" / "ppo-other" / "model"
    shutil.copytree(gate.sft_dir, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(config | {"note": "other weights"}))
    result = gate.run(other)
    # then v2 is marked interrupted, by tag and card, and is neither champion nor challenger
    version = gate.client.get_model_version(POLICY, "2")
    assert version.tags[registry_pending.WRITE_TAG] == registry_pending.INTERRUPTED
    assert version.description.startswith(f"# {POLICY} v2: INCOMPLETE")
    assert result["policy_version"] == "3" and result["champion"] == "3"
    assert str(registry.alias_version(gate.client, POLICY, "challenger")) == "3"
    # and the run's own versions are complete
    for name, key in ((POLICY, "policy_version"), (RM, "reward_model_version")):
        tags = gate.client.get_model_version(name, result[key]).tags
        assert registry_pending.WRITE_TAG not in tags, name


def test_the_same_command_again_completes_a_version_its_killed_run_left(
    gate, tmp_path, monkeypatch
):
    _passing(monkeypatch)
    candidate = _foreign_policy(tmp_path / "foreign", gate.profile_dir)
    _killed_while_writing_its_card(gate, candidate, monkeypatch)
    # when the same command runs again (the same weights)
    result = gate.run(candidate)
    # then it completes v2: its card, gate tags, champion, and no mark left
    version = gate.client.get_model_version(POLICY, "2")
    assert result["policy_version"] == "2" and result["gate"]["registered"] == "existing"
    assert registry_pending.WRITE_TAG not in version.tags
    assert version.description.startswith(f"# {POLICY} v2\n")
    assert version.tags["gate_promote"] == "True" and version.tags["promoted_by"] == "gate"
    assert str(registry.champion_version(gate.client, POLICY)) == "2"


def test_a_champion_moved_while_the_gate_played_stays_where_it_was_moved(
    gate, tmp_path, monkeypatch
):
    # given champion v1, a version v2 a person may pick, and a candidate whose gate passes
    _passing(monkeypatch)
    other = str(gate.client.create_model_version(POLICY, str(tmp_path)).version)
    candidate = _foreign_policy(tmp_path / "foreign", gate.profile_dir)
    real = registry.head_to_head

    def moved_meanwhile(*args, **kwargs):
        match = real(*args, **kwargs)
        # a person moves champion (MLflow's UI takes no registry slot) while the gate plays v1
        gate.client.set_registered_model_alias(POLICY, "champion", other)
        return match

    monkeypatch.setattr(registry, "head_to_head", moved_meanwhile)
    # when the gate runs
    result = gate.run(candidate)
    # then the candidate is registered, but champion stays on v2, which it never played
    assert result["gate"]["incumbent"] == "champion v1" and result["policy_version"] == "3"
    assert registry.champion_version(gate.client, POLICY) == "2" == result["champion"]
    # and its decision, gate block and tags say promote false, and why, plainly
    reason = result["decision"]["reason"]
    assert reason.startswith(
        "champion moved to v2 while this run was gating; run again to gate against it ("
    )
    assert not result["decision"]["promote"] and not result["gate"]["promote"]
    assert not result["gate"]["promoted"] and result["gate"]["reason"] == reason
    tags = gate.client.get_model_version(POLICY, "3").tags
    assert tags["gate_promote"] == "False" and tags["gate_reason"] == reason
    # and the rule, which passed, is not tagged rejected: held back, on the version and the run
    assert tags["gate_held_back"] == "True" and result["decision"]["held_back"]
    run_tags = gate.client.get_run(result["mlflow_run_id"]).data.tags
    assert run_tags["gate_decision"] == "held back"
