"""End to end on a user's dataset: an HH-style directory and a tiny Llama built from config.

One project root: the first run trains on 200 HH pairs; then 50 more
comparisons arrive and the second run re-runs only what reads them. Then the
other two preference shapes, each in a run of its own: K-wise rankings mixing
K = 2 and 4 (Parquet, with pretraining text and a FLAN mixture), and explicit
prompt/chosen/rejected pairs (JSONL).
"""

import json
from contextlib import contextmanager

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from instructflow.flows import dataset_gate
from instructflow.flows.cli import main
from instructflow.tasks import judge_trust, promotion, registry, tracking
from instructflow.tasks.dataset_report import dataset_markdown
from instructflow.tasks.registry_config import RegistryConfig
from tests.conftest import init_dvc_project, use_project
from tests.own_data import (
    WORDS,
    hh_text,
    write_extras,
    write_hh_dataset,
    write_kwise_dataset,
    write_pairwise_dataset,
)
from tests.tiny_models import tiny_llama

pytestmark = pytest.mark.slow


def _stage_runs(client: MlflowClient, parent_id: str) -> dict[str, bool]:
    """stage name -> served from the cache, for one pipeline run."""
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id
    runs = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent_id}'")
    return {
        r.data.tags.get("stage", r.info.run_name): r.data.tags.get("cached") == "true" for r in runs
    }


def test_an_hh_dataset_runs_end_to_end_and_new_comparisons_rerun_only_what_reads_them(
    prefect_harness, fast_smoke, tmp_path, monkeypatch
):
    # given an HH-style dataset, a tiny Llama and a project root without the world's data
    root = init_dvc_project(tmp_path / "project")
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(root))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    data = write_hh_dataset(tmp_path / "hh", n_pairs=200)
    texts = [line for f in data.iterdir() for line in f.read_text().splitlines()]
    llama = tiny_llama(tmp_path / "llama", texts)
    params = tmp_path / "params.json"
    # PPO keeps its last iteration: a run on new comparisons then trains other weights than
    # the champion's (kept at SFT's, both runs' candidates would be one version: no rival)
    params.write_text(json.dumps(fast_smoke(ppo={"min_gain": -1e9})))
    argv = ["run", "--data", str(data), "--base-model", str(llama), "--params", str(params)]
    rivals_chosen_holding_the_registry_slot = _watch_the_registry_slot(monkeypatch)

    # when the pipeline runs on it
    assert main(argv) == 0
    first = json.loads((root / "reports" / "latest" / "report.json").read_text())

    # then the report has the policies, no gold, the dataset's md5s and what was skipped
    assert {"sft", "ppo", "base"} <= set(first["policies"])
    assert first["skipped"]["ppo_ptx"].startswith("skipped: the dataset has no pretrain table")
    assert all(row["gold_score"] is None for row in first["policies"].values())
    assert "world_version" not in first["run"]  # the embedded world's, not this dataset's
    # and the settings set off the profile's defaults, as an embedded run's report has them
    # (`compare` names what changed by them)
    settings = first["run"]["settings"]
    assert settings["data"] == str(data) and settings["ppo.min_gain"] == -1e9
    # where each policy, the RM and the evaluation are, as in the embedded world's report,
    # and the other stages (the import, the comparisons), by stage name
    keys = first["run"]["stage_keys"]
    assert set(keys) == set(first["policies"]) | {
        "reward_model", "judge", "evaluation", "data", "comparisons",
    }  # fmt: skip
    assert keys["evaluation"].startswith("evaluation-") and keys["sft"].startswith("sft-")
    # win rates against SFT come from the held-out judge, with its accuracy on held-out pairs
    assert (
        first["judge"]["training_pairs"] > 0
        and 0.0 <= first["judge"]["accuracy_heldout_pairs"] <= 1.0
    )
    for name in ("ppo", "base"):
        win = first["policies"][name]["win_rate_vs_sft"]
        assert 0.0 <= win["ci95"][0] <= win["mean"] <= win["ci95"][1] <= 1.0
    md5s = {name: t["md5"] for name, t in first["dataset"]["tables"].items()}
    assert set(md5s) == {"prompts", "demonstrations", "preferences"}
    assert first["dataset"]["split_rule"] == "user_id"
    assert first["dataset"]["k_counts"] == {"2": 200}
    # and the registry's challenger carries them, registered apart from the embedded world's
    policy_name = RegistryConfig().names("smoke", str(data))[0]
    assert first["gate"]["model_name"] == policy_name == "instructflow-policy-hh-smoke"
    client = MlflowClient(tracking_uri=uri)
    challenger = client.get_model_version_by_alias(policy_name, "challenger")
    assert challenger.tags["data_md5_preferences"] == md5s["preferences"]
    assert challenger.tags["data_md5_demonstrations"] == md5s["demonstrations"]
    # and the gate decided on the held-out judge's evidence, refusing an untrustworthy judge
    gate = first["gate"]
    assert gate["evidence"] == "held-out judge" and gate["candidate"] == "ppo"
    assert gate["win_rate"] == first["policies"]["ppo"]["win_rate_vs_sft"]
    assert challenger.tags["gate_evidence"] == "held-out judge"
    # and it records no public-suite figures nor labelers: a dataset run has neither, and
    # null or empty fields would read like measurements
    assert "public_suite" not in gate and "public_suite_margin" not in gate
    assert "labelers" not in first
    assert not any(tag.startswith("gate_public_suite_") for tag in challenger.tags)
    # and the version carries its lineage and figures, and a model card, as on the world
    assert challenger.tags["base_model"] == str(llama) and challenger.tags["tokenizer_digest"]
    assert challenger.tags["dvc_data_md5"] == first["run"]["dvc_data_md5"]
    assert float(challenger.tags["win_rate_vs_sft"]) == pytest.approx(
        gate["win_rate"]["mean"], abs=1e-4
    )
    assert "held-out judge, the evaluation's test prompts" in challenger.description
    assert "public-suite accuracy" not in challenger.description  # the card's gate line
    report_md = (root / "reports" / "latest" / "report.md").read_text()
    assert "- played: sft (held-out judge, the evaluation's test prompts)" in report_md
    # and each training stage's trainable fraction and peak memory, as on the embedded world
    assert set(first["training"]) == {"sft", "reward_model", "ppo"}
    assert all(row["trainable_fraction"] == 1.0 for row in first["training"].values())
    assert "## Training" in report_md
    assert "## Policies (test users, held-out judge; 95% bootstrap CI)" in report_md
    # and it ends with the Dataset section rendered from its report.json (as eval import's does)
    assert "\n## Dataset\n" in report_md and report_md.endswith(dataset_markdown(first))
    # and a plot of the judge's win rates beside report.md and in the MLflow run, as on the
    # embedded world
    run_id = first["run"]["mlflow_run_id"]
    assert "![win_rate_vs_sft](win_rate_vs_sft.png)" in report_md
    assert (root / "reports" / run_id / "win_rate_vs_sft.png").read_bytes().startswith(b"\x89PNG")
    logged = {a.path for a in client.list_artifacts(run_id, "report")}
    assert "report/win_rate_vs_sft.png" in logged
    # and the evaluation's MLflow run says how its win-rate plots are headed: with the
    # gate's verdict on the judge when it is untrusted (judge_trust.untrusted_caption)
    judged = {
        "judge/accuracy_heldout_pairs": first["judge"]["accuracy_heldout_pairs"],
        "judge/test_pairs": first["judge"]["test_pairs"],
    }
    caption = judge_trust.untrusted_caption(judged)
    # and the gate shows the judge's accuracy as the report's judge block does: an exact
    # share of held-out pairs (ties count half), not a float32 mean's 0.46666666865348816
    accuracy, pairs = judged["judge/accuracy_heldout_pairs"], judged["judge/test_pairs"]
    assert (
        gate["judge_accuracy_heldout_pairs"]
        == accuracy
        == round(accuracy * 2 * pairs) / (2 * pairs)
    )
    assert (caption is None) == first["judge"]["trustworthy"]
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id
    (evaluation_run,) = client.search_runs(
        [experiment], f"tags.mlflow.parentRunId = '{run_id}' and tags.stage = 'evaluation'"
    )
    assert evaluation_run.data.params["judge_trust"] == (caption or "trusted")
    if not first["judge"]["trustworthy"]:
        assert not gate["promote"]
        assert gate["reason"] == f"no automatic promotion: {first['judge']['trust_reason']}"

    # when its version is champion (by hand, if the gate did not promote it) and 50 more
    # comparisons arrive and the pipeline runs again
    promotion.promote_manually(str(challenger.version), "own-data test", policy_name)
    with (data / "preferences.jsonl").open("a") as f:
        for i in range(50):
            word = WORDS[i % len(WORDS)]
            turns = [("user", f"Say the word {word} twice. (new {i})")]
            row = {
                "chosen": hh_text([*turns, ("assistant", f"{word} {word}")]),
                "rejected": hh_text([*turns, ("assistant", "no")]),
                "user_id": f"user-{i % 40}",
            }
            f.write(json.dumps(row) + "\n")
    assert main(argv) == 0
    second = json.loads((root / "reports" / "latest" / "report.json").read_text())

    # then what does not read preferences came from the cache, the rest ran again
    cached = _stage_runs(client, second["run"]["mlflow_run_id"])
    assert cached["base_model"] and cached["sft"], cached
    assert not any(
        cached[s] for s in ("data", "comparisons", "reward_model", "ppo", "evaluation")
    ), cached
    # and its report names the stages served from the cache, as MLflow does
    assert first["run"]["cached_stages"] == []
    assert set(second["run"]["cached_stages"]) == {s for s, hit in cached.items() if hit}
    assert second["dataset"]["tables"]["preferences"]["rows"] == 250
    assert second["dataset"]["tables"]["preferences"]["md5"] != md5s["preferences"]
    # and its gate played the champion it would replace, not SFT (it played SFT before)
    gate = second["gate"]
    assert first["gate"]["registered"] == gate["registered"] == "new"
    assert gate["incumbent"] == f"champion v{challenger.version}" and gate["prompts"] > 0
    reason = gate["reason"]  # beats it, loses to it, or an untrusted judge decides nothing
    assert f"champion v{challenger.version}" in reason or reason.startswith(
        "no automatic promotion"
    )
    report_md = (root / "reports" / "latest" / "report.md").read_text()
    assert f"- played: champion v{challenger.version} (held-out judge, " in report_md
    # and both runs chose whom to play while holding the registry's slot (one gate at a time)
    assert rivals_chosen_holding_the_registry_slot == [True, True]


def _watch_the_registry_slot(monkeypatch) -> list[bool]:
    """For each dataset gate: whether the registry slot was held when it chose its rival."""
    held, seen = [False], []
    real_slot, real_rival = dataset_gate.registry_slot, dataset_gate._rival

    @contextmanager
    def watched_slot():
        with real_slot():
            held[0] = True
            try:
                yield
            finally:
                held[0] = False

    def watched_rival(*args):
        seen.append(held[0])
        return real_rival(*args)

    monkeypatch.setattr(dataset_gate, "registry_slot", watched_slot)
    monkeypatch.setattr(dataset_gate, "_rival", watched_rival)
    return seen


def test_kwise_parquet_with_pretraining_text_and_a_mixture_runs_ptx_and_flan(
    prefect_harness, fast_smoke, tmp_path, monkeypatch
):
    # given K-wise rankings mixing K = 2 and 4, a pretrain table and a FLAN mixture, all Parquet
    root = init_dvc_project(tmp_path / "project")
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    data = write_extras(write_kwise_dataset(tmp_path / "kw", n=120, fmt="parquet"), fmt="parquet")
    llama = tiny_llama(tmp_path / "llama", [f"Say the word {w} twice. {w} {w}" for w in WORDS] * 5)
    from instructflow.flows.params import PipelineParams
    from instructflow.flows.pipeline import rlhf_pipeline

    # when the pipeline runs on it
    params = PipelineParams(**fast_smoke(data=str(data), base_model=str(llama)))
    result = rlhf_pipeline(params)

    # then PPO-ptx mixed the dataset's text, the FLAN baseline trained, T0 was skipped
    assert {"sft", "ppo", "ppo_ptx", "flan", "base"} <= set(result["policies"])
    assert set(result["skipped"]) == {"t0"}
    assert result["dataset"]["k_counts"] == {2: 60, 4: 60}
    assert result["dataset"]["sft_source"].startswith("preferred responses")
    assert result["dataset"]["tables"]["preferences"]["file"] == "preferences.parquet"
    assert result["policies"]["ppo_ptx"]["pretrain_perplexity"] is not None
    assert result["gate"]["candidate"] == "ppo_ptx"

    # when one pretraining document is edited and the pipeline runs again
    docs = pd.read_parquet(data / "pretrain.parquet")
    docs.loc[0, "text"] = "The word pear is a word."
    docs.to_parquet(data / "pretrain.parquet")
    again = rlhf_pipeline(params)
    # then the base model (a copy of the given one) and SFT came from the cache; what
    # reads the text ran again
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    cached = _stage_runs(client, again["run"]["mlflow_run_id"])
    assert cached["base_model"] and cached["sft"] and cached["flan"], cached
    assert not cached["ppo_ptx"] and not cached["evaluation"], cached


def test_explicit_prompt_chosen_rejected_pairs_run_end_to_end(
    prefect_harness, fast_smoke, tmp_path, monkeypatch
):
    # given prompt/chosen/rejected text pairs with scores and no user ids
    root = init_dvc_project(tmp_path / "project")
    use_project(monkeypatch, root)
    data = write_pairwise_dataset(tmp_path / "pw", n=120)
    llama = tiny_llama(tmp_path / "llama", [f"Say the word {w} twice. {w} {w}" for w in WORDS] * 5)
    from instructflow.flows.params import PipelineParams
    from instructflow.flows.pipeline import rlhf_pipeline

    # when the pipeline runs on it, with a person's approval required before any promotion
    gate_cfg = {"require_approval": True}
    params = fast_smoke(data=str(data), base_model=str(llama), gate=gate_cfg)
    result = rlhf_pipeline(PipelineParams(**params))

    # then every pair became a K = 2 comparison, split by prompt, and the run completed without gold
    summary = result["dataset"]
    assert summary["preference_shape"] == "pairwise" and summary["k_counts"] == {2: 120}
    assert summary["split_rule"] == "prompt_hash"
    assert summary["sft_source"].startswith("preferred responses")
    assert {"sft", "ppo", "base"} <= set(result["policies"])
    assert all(row["gold_score"] is None for row in result["policies"].values())
    win = result["policies"]["ppo"]["win_rate_vs_sft"]
    assert 0.0 <= win["ci95"][0] <= win["mean"] <= win["ci95"][1] <= 1.0
    assert result["status"] == "completed" and result["gate"]["evidence"] == "held-out judge"
    # and nothing was promoted without that approval, whatever the judge said
    gate = result["gate"]
    assert gate["require_approval"] and not gate["promoted"]
    assert gate["awaiting_approval"] == gate["promote"]
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    assert registry.champion_version(client, gate["model_name"]) is None
    # and the report and the model card say the evaluation held prompts out, not users (the
    # rows name none): both said "test users"
    report_md = (root / "reports" / "latest" / "report.md").read_text()
    assert "## Policies (test prompts, held-out judge; 95% bootstrap CI)" in report_md
    # and base_fewshot showed the 3 demonstrations asked for: no shortfall said (one is:
    # tests/flows/test_fewshot_shortfall.py)
    assert "base_fewshot" in result["policies"] and "fewshot_shortfall" not in result
    assert "evaluation.fewshot_examples" not in report_md
    challenger = client.get_model_version_by_alias(gate["model_name"], "challenger")
    assert "## Evaluation (test prompts)" in challenger.description
    # and MLflow and Prefect record the gate as on the embedded world: the version names the
    # pipeline run as its run (whose page lists it), and the registry stage's run, which
    # logged it, has the gate's figures and tags
    parent_id = result["run"]["mlflow_run_id"]
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id
    (registry_run,) = client.search_runs(
        [experiment], f"tags.mlflow.parentRunId = '{parent_id}' and tags.stage = 'registry'"
    )
    assert challenger.run_id == parent_id
    logged = client.get_logged_model(challenger.source.removeprefix("models:/"))
    assert logged.source_run_id == registry_run.info.run_id
    metrics, tags = registry_run.data.metrics, registry_run.data.tags
    assert metrics["registry/gate_win_rate"] == pytest.approx(gate["win_rate"]["mean"])
    assert [metrics["registry/gate_ci_low"], metrics["registry/gate_ci_high"]] == pytest.approx(
        gate["win_rate"]["ci95"]
    )
    assert metrics["registry/promoted"] == float(gate["promoted"]) == 0.0
    assert tags["policy_version"] == str(challenger.version) == gate["policy_version"]
    assert tags["reward_model_version"] == gate["reward_model_version"]
    assert tags["gate_decision"] == ("passed" if gate["promote"] else "rejected")
    assert tags["gate_incumbent"] == "sft" and tags["policy_registered"] == "new"
    assert tags["policy_weights_digest"] == gate["weights_digest"]
    # and the parent run has every policy's figures and the registry stage's seconds
    parent = client.get_run(parent_id).data
    assert parent.metrics["eval/ppo/win_rate_vs_sft"] == pytest.approx(win["mean"])
    assert {f"eval/{name}/kl_to_sft" for name in result["policies"]} <= set(parent.metrics)
    assert parent.metrics["stage_seconds/registry"] == result["run"]["stage_seconds"]["registry"]
    assert parent.tags["policy_version"] == str(challenger.version)
    # and the Prefect flow run has the gate's and the policies' artifacts beside the report
    keys = _artifact_keys(result["run"]["prefect_flow_run_id"])
    assert {"promotion-gate", "rlhf-policies", "rlhf-report", "settings-in-force"} <= keys


def _artifact_keys(flow_run_id: str) -> set[str]:
    """The keys of a Prefect flow run's artifacts."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as prefect:
        of_this_run = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        return {a.key for a in prefect.read_artifacts(flow_run_filter=of_this_run)}
