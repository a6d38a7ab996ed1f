"""The registry says where `champion` stands (the registered model's description), each
registered version says where it came from, and the model card links the runs' pages."""

from instructflow.tasks import promotion, registry, registry_pending
from instructflow.tasks.registry_snapshot import RegistrySnapshot
from tests.conftest import use_project

POLICY, RM = "instructflow-policy-smoke", "instructflow-reward-model-smoke"
LINEAGE = {
    "profile": "smoke",
    "seed": 0,
    "dvc_data_md5": "0123abcd.dir",
    "git_commit": "cafe",
    "mlflow_parent_run_id": "ab12",
    "mlflow_parent_run_url": "http://127.0.0.1:5000/#/experiments/1/runs/ab12",
    "prefect_flow_run_id": "7f0c",
    "prefect_flow_run_url": None,  # no page known: not a tag
}


def _checkpoint(tmp_path, stage_key: str) -> str:
    model_dir = tmp_path / "runs" / stage_key / "model"
    model_dir.mkdir(parents=True)
    return str(model_dir)


def _register(client, tmp_path, run: int) -> tuple[str, str]:
    dirs = (_checkpoint(tmp_path, f"ppo-{run}"), _checkpoint(tmp_path, f"rm-{run}"))
    lineage = LINEAGE | {"mlflow_parent_run_id": f"run{run}"}
    tags = {"policy": "ppo_ptx"}
    versions = registry.register_candidate(client, (POLICY, RM), dirs, lineage, tags, {"acc": 0.75})
    registry_pending.finish(client, zip((POLICY, RM), versions, strict=True))  # as its stage ends
    return versions


def test_the_reward_model_carries_the_runs_lineage_and_a_card(client, tmp_path):
    policy_version, rm_version = _register(client, tmp_path, 1)
    rm = client.get_model_version(RM, rm_version)
    for key in ("profile", "seed", "dvc_data_md5", "git_commit", "mlflow_parent_run_id"):
        assert rm.tags[key] == str((LINEAGE | {"mlflow_parent_run_id": "run1"})[key]), key
    assert rm.tags["acc"] == "0.75" and "prefect_flow_run_url" not in rm.tags
    assert rm.description.startswith(f"# {RM} v{rm_version}\n")
    assert f"registered beside {POLICY} v{policy_version}" in rm.description
    assert "- data version (DVC md5): `0123abcd.dir`" in rm.description
    policy = client.get_model_version(POLICY, policy_version)
    assert policy.tags["reward_model_version"] == rm_version
    assert registry.alias_version(client, POLICY, "challenger") == policy_version


def test_two_refused_gates_leave_no_champion_and_the_registry_says_so(client, tmp_path):
    for run in (1, 2):
        version, _ = _register(client, tmp_path, run)
        client.set_model_version_tag(POLICY, version, "gate_promote", "False")
        client.set_model_version_tag(POLICY, version, "gate_reason", f"CI too wide ({run})")
        registry.describe_registered_model(client, POLICY)
    text = client.get_registered_model(POLICY).description
    assert "**No champion yet**: no version has passed the gate (latest: v2, CI too wide (2))" in (
        text
    )
    assert "`challenger` is the latest run's candidate" in text


def test_a_manual_promotion_updates_the_registered_models_status(client, tmp_path):
    for run in (1, 2):
        _register(client, tmp_path, run)
    registry.describe_registered_model(client, POLICY)
    assert promotion.promote_manually("1", "reads better", POLICY)
    text = client.get_registered_model(POLICY).description
    assert "**Champion: v1**, promoted by hand (`instructflow promote`): reads better" in text
    assert f"Challenger: v2 (run [`run2`]({LINEAGE['mlflow_parent_run_url']}))" in text


def test_a_failed_stage_puts_the_registered_models_description_back(client, tmp_path):
    _register(client, tmp_path, 1)
    before = registry.describe_registered_model(client, POLICY)
    snapshot = RegistrySnapshot.take(client, [POLICY, RM])
    # a second run's writes, then a failure
    _register(client, tmp_path, 2)
    registry.describe_registered_model(client, POLICY)
    assert client.get_registered_model(POLICY).description != before
    snapshot.restore(client)
    assert client.get_registered_model(POLICY).description == before
    assert registry.alias_version(client, POLICY, "challenger") == "1"


def test_a_plain_runs_flow_run_page_is_where_make_serve_shows_its_database(monkeypatch, tmp_path):
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, PREFECT_UI_URL, temporary_settings

    from instructflow.tasks import env

    # given no Prefect server of yours: the run's temporary one has no UI URL (Prefect's
    # own flow_run.ui_url is then 'None/flow-runs/...'); `make serve` shows it on 4200
    # (a Prefect home of its own: the checkout's .prefect/served-at.url, left by a
    # `make serve PREFECT_PORT=4272`, named that port instead)
    monkeypatch.delenv("PREFECT_PORT", raising=False)
    with temporary_settings(
        {PREFECT_HOME: tmp_path}, restore_defaults={PREFECT_API_URL, PREFECT_UI_URL}
    ):
        assert PREFECT_UI_URL.value() is None
        assert env.prefect_flow_run_url("7f0c") == "http://127.0.0.1:4200/runs/flow-run/7f0c"
        monkeypatch.setenv("PREFECT_PORT", "4300")  # scripts/serve.sh's port setting
        assert env.prefect_flow_run_url("7f0c") == "http://127.0.0.1:4300/runs/flow-run/7f0c"
    # given a server (PREFECT_API_URL, as `make serve`'s worker has): its UI
    with temporary_settings({PREFECT_API_URL: "http://prefect.lab:4200/api"}):
        assert env.prefect_flow_run_url("7f0c") == "http://prefect.lab:4200/runs/flow-run/7f0c"
    assert env.prefect_flow_run_url("") is None


def test_an_mlflow_run_page_is_on_the_tracking_server_or_make_serves(monkeypatch, tmp_path):
    from instructflow.tasks import env

    use_project(monkeypatch, tmp_path)
    monkeypatch.delenv("INSTRUCTFLOW_MLFLOW_UI", raising=False)
    monkeypatch.delenv("MLFLOW_PORT", raising=False)
    assert (
        env.mlflow_run_url("1", "ab12")
        == "http://127.0.0.1:5000/#/experiments/1/runs/ab12?workflowType=machine_learning"
    )
    monkeypatch.setenv("INSTRUCTFLOW_MLFLOW_UI", "http://mlflow.lab/")
    assert (
        env.mlflow_run_url("1", "ab12")
        == "http://mlflow.lab/#/experiments/1/runs/ab12?workflowType=machine_learning"
    )


def test_links_follow_the_ports_make_serve_was_given_in_another_shell(monkeypatch, tmp_path):
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, PREFECT_UI_URL, temporary_settings

    from instructflow.tasks import env

    # given `make serve` with PREFECT_PORT=4331 MLFLOW_PORT=5331 (it leaves where it serves
    # each store beside it), and a run started in a shell without those variables
    use_project(monkeypatch, tmp_path)
    for name in ("INSTRUCTFLOW_MLFLOW_UI", "MLFLOW_PORT", "PREFECT_PORT"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "served-at.url").write_text("http://127.0.0.1:5331\n")
    (tmp_path / ".prefect").mkdir()
    (tmp_path / ".prefect" / "served-at.url").write_text("http://127.0.0.1:4331\n")
    # then its links point at those ports, not the defaults
    assert env.mlflow_run_url("1", "ab12").startswith("http://127.0.0.1:5331/#/experiments/1/")
    settings = {PREFECT_HOME: str(tmp_path / ".prefect")}
    with temporary_settings(settings, restore_defaults={PREFECT_API_URL, PREFECT_UI_URL}):
        assert env.prefect_flow_run_url("7f0c") == "http://127.0.0.1:4331/runs/flow-run/7f0c"


def test_each_registered_version_lists_the_lora_merged_into_its_own_weights(client, tmp_path):
    # given a run whose policy merged SFT's and PPO's adapters and whose RM trained none of
    # its own (SFT's, which it starts from, are in its weights)
    dirs = (_checkpoint(tmp_path, "ppo-1"), _checkpoint(tmp_path, "rm-1"))
    policy_lora, rm_lora = "sft r=4 alpha=8; ppo r=16 alpha=32", "sft r=4 alpha=8"
    lineage = LINEAGE | {"lora": policy_lora}
    # when both are registered
    versions = registry.register_candidate(
        client, (POLICY, RM), dirs, lineage, {"policy": "ppo"}, {}, {"lora": rm_lora}
    )
    # then each version's tag and card name its own adapters, not the other's
    policy, rm = (
        client.get_model_version(n, v) for n, v in zip((POLICY, RM), versions, strict=True)
    )
    assert policy.tags["lora"] == policy_lora and rm.tags["lora"] == rm_lora
    assert f"(adapters merged into these weights): `{rm_lora}`\n" in rm.description
    assert "ppo r=16" not in rm.description
    # and a reward model without adapters of any stage says none
    dirs = (_checkpoint(tmp_path, "ppo-2"), _checkpoint(tmp_path, "rm-2"))
    versions = registry.register_candidate(client, (POLICY, RM), dirs, lineage, {}, {}, None)
    rm = client.get_model_version(RM, versions[1])
    assert "lora" not in rm.tags and "LoRA" not in rm.description
