"""`instructflow eval export|import`: a finished run's human evaluation round trip.

    instructflow eval export latest --n 100      # reports/<run>/human_eval/labeling.{jsonl,csv}
    instructflow eval import latest FILLED.csv   # win rates, Likert, MLflow, report, gate

Export takes the run's evaluation samples (test users' prompts) from MLflow,
plus the champion the gate played, if any, sampled on the same prompts.
Import logs `human/<policy>/...` metrics to the run, adds a `human_eval`
block to its report, and lets the gate decide again on the human evidence:
people outrank every automatic judge. The report's gate block then says
`evidence: human`.
"""

import json
from dataclasses import replace
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from instructflow.flows import publish
from instructflow.tasks import (
    env,
    human_eval,
    human_labels,
    registry,
    registry_lookup,
    registry_rival,
    report,
    tracking,
)
from instructflow.tasks.evaluation import EvalConfig, Policy, sample
from instructflow.tasks.gate import alias_effect, base_model_caveat, decide, with_caveat
from instructflow.tasks.model_card import describe_registered_model, with_human_verdict
from instructflow.tasks.paths import reports_dir
from instructflow.tasks.stats import mean_with_ci
from instructflow.tasks.tables import read_jsonl


def run_folder(run: str) -> Path:
    """reports/<run id>/ of a finished run ('latest' is the newest completed one)."""
    if run == "latest":
        latest = reports_dir() / "latest" / "report.json"
        if not latest.exists():
            raise SystemExit(f"instructflow: no {latest}: run the pipeline first")
        run = json.loads(latest.read_text())["run"]["mlflow_run_id"]
    folder = reports_dir() / run
    if not (folder / "report.json").exists():
        raise SystemExit(f"instructflow: no report for run {run} under {reports_dir()}")
    report = json.loads((folder / "report.json").read_text())
    if not report.get("policies") and report.get("status") in ("failed", "interrupted"):
        # Its evaluation never logged samples: export ended in MLflow's download traceback.
        error = f" ({report['error']})" if report.get("error") else ""
        raise SystemExit(
            f"instructflow: run {run} {report['status']} at stage"
            f" {report.get('stopped_at_stage')!r}{error}: it has no samples to label"
        )
    return folder


def evaluation_responses(client: MlflowClient, parent_run_id: str) -> dict[str, list[dict]]:
    """The evaluation stage's samples of the run (from the run that computed them, if cached)."""
    runs = client.search_runs(
        [client.get_run(parent_run_id).info.experiment_id],
        f"tags.stage = 'evaluation' and tags.mlflow.parentRunId = '{parent_run_id}'",
    )
    if not runs:
        raise SystemExit(f"instructflow: run {parent_run_id} has no evaluation stage")
    source = runs[0].data.tags.get("cached_from_run_id") or runs[0].info.run_id
    folder = Path(mlflow.artifacts.download_artifacts(run_id=source, artifact_path="evaluation"))
    return {path.stem: read_jsonl(path) for path in sorted((folder / "responses").glob("*.jsonl"))}


def _champion_rows(gate: dict, rows: list[dict], seed: int) -> list[dict]:
    """The champion the gate played, sampled on the exported prompts (sample 0 of each): on
    the rendered prompt, as every policy was; what people read is kept as it is."""
    version = gate["incumbent"].removeprefix("champion v")
    model_dir = Path(registry_rival.local_checkpoint(gate["model_name"], version))
    prompts = [row["prompt"] for row in rows]
    texts = sample(Policy(gate["incumbent"], model_dir), prompts, EvalConfig(), seed).texts
    return [
        {"prompt_id": row["prompt_id"], "sample": 0, "prompt": row["prompt"], "response": text}
        | ({"readable_prompt": row["readable_prompt"]} if "readable_prompt" in row else {})
        for row, text in zip(rows, texts, strict=True)
    ]


def export(run: str, n: int, seed: int = 0) -> dict[str, Path]:
    folder = run_folder(run)
    result = json.loads((folder / "report.json").read_text())
    tracking.setup()
    responses = evaluation_responses(MlflowClient(), result["run"]["mlflow_run_id"])
    gate = result.get("gate") or {}
    if gate.get("incumbent", "").startswith("champion v"):
        firsts = [row for row in responses["sft"] if row["sample"] == 0][:n]
        responses[gate["incumbent"]] = _champion_rows(gate, firsts, seed)
    items, key = human_eval.blinded_items(responses, n, seed)
    return human_eval.write_labeling_files(items, key, folder / "human_eval")


def _holds_rivals_weights(gate: dict, rival: str) -> bool:
    """Whether the candidate holds `rival`'s very weights, as the gate found by digest."""
    recorded = gate.get("candidate_holds_incumbent_weights")
    if recorded is not None and rival == gate["incumbent"]:
        return recorded
    # A report from before the gate recorded it, or people ranked against SFT in place of
    # the champion the gate played: the candidate_note is set only when PPO kept SFT's weights.
    return rival == "sft" and bool(gate.get("candidate_note"))


def _regate(client: MlflowClient, gate: dict, labels: dict, key: dict) -> dict:
    """The gate's decision again, on people's rankings of the candidate against its rival."""
    policies = {p for item in key.values() for p in item.values()}
    rival = gate["incumbent"] if gate["incumbent"] in policies else "sft"
    wins = human_eval.pairwise_wins(labels, key, gate["candidate"], rival)
    win = mean_with_ci(wins)
    public = gate.get("public_suite") or {}  # a dataset run's gate has no public suite
    plays_itself = _holds_rivals_weights(gate, rival)
    decision = decide(
        win["mean"],
        tuple(win["ci95"]),
        public.get("challenger"),
        public.get("incumbent"),
        gate.get("public_suite_margin", 0.02),
        rival,
        gate.get("win_margin", 0.0),
        same_weights=plays_itself,
    )
    name, version = gate["model_name"], gate["policy_version"]
    # people compared the two families the automatic gate did: its caveat still holds
    theirs = registry_rival.incumbent_base_model(client, name, rival)
    ours = client.get_model_version(name, version).tags.get("base_model")
    decision = with_caveat(decision, base_model_caveat(rival, theirs, ours))
    now, left = registry.champion_version(client, name), gate.get("champion")
    # People judged the candidate against the rival of the run's gate: if `champion` has
    # moved since (a later run, a manual promotion), that evidence says nothing about the
    # version there now, so the aliases stay as they are.
    moved = now != left
    if moved:
        reason = (
            f"{decision.reason}; champion moved since this run's gate ({_v(left)} -> {_v(now)}): "
            "aliases unchanged, promote by hand (instructflow promote) if people's rankings "
            "should decide"
        )
        decision = replace(decision, reason=reason)
    # People's rankings are no approval: with approval required they promote nothing.
    effect = alias_effect(
        decision.promote,
        gate.get("auto_promote", True),
        bool(gate.get("require_approval")),
        champion_moved=moved,
        promoted_here=gate.get("promoted", False),
        champion_before=gate["incumbent"].startswith("champion v"),
        ranked_worse=win["ci95"][1] < 0.5,
    )
    if gate.get("promoted") and not decision.promote and not moved and not effect.restore:
        keeps = f"; it stays champion: there was none before it, and people did not rank it below {rival}"
        decision = replace(decision, reason=decision.reason + keeps)
    decision = registry.record_decision(
        client, name, version, decision, effect, evidence="human", by="human"
    )
    if effect.restore:
        # The automatic gate moved `champion` here and people disagree.
        registry_lookup.put_back(client, name, gate["incumbent"], version, decision.reason)
    regated = gate | {
        "automatic": {k: gate[k] for k in ("evidence", "incumbent", "win_rate", "reason")},
        "evidence": "human",
        "incumbent": rival,
        "candidate_holds_incumbent_weights": plays_itself,  # of the rival people ranked
        "prompts": len(wins),
        "win_rate": win,
        "promote": decision.promote,
        "promoted": effect.promote,
        "awaiting_approval": effect.awaiting_approval,  # people's verdict, not the gate's
        "reason": decision.reason,
        "champion": registry.champion_version(client, name),
        "champion_before": now,  # where it was before people's verdict
    }
    card = client.get_model_version(name, version).description or ""
    client.update_model_version(name, version, description=with_human_verdict(card, regated))
    describe_registered_model(client, name)  # people's verdict may have moved `champion`
    return regated


def _v(version: str | None) -> str:
    return f"v{version}" if version else "none"


def import_labels(run: str, path: Path) -> dict:
    folder = run_folder(run)
    result = json.loads((folder / "report.json").read_text())
    exported = folder / "human_eval"
    if not (exported / "key.json").exists():
        raise SystemExit(
            f"instructflow: run {result['run']['mlflow_run_id']} has no labeling files: "
            f"`instructflow eval export {run}` writes them"
        )
    key = json.loads((exported / "key.json").read_text())
    digests = exported / "exported.json"  # absent from exports made before it existed
    known = json.loads(digests.read_text()) if digests.exists() else None
    labels = human_labels.read_labels(path, key, known)
    policies = human_eval.human_results(labels, key)
    tracking.setup()
    client = MlflowClient()
    parent = result["run"]["mlflow_run_id"]
    for policy, row in policies.items():
        tag = policy.replace(" ", "_")
        if "win_rate_vs_sft" in row:
            client.log_metric(
                parent, f"human/{tag}/win_rate_vs_sft", row["win_rate_vs_sft"]["mean"]
            )
        if row["likert"]["mean"] is not None:
            client.log_metric(parent, f"human/{tag}/likert", row["likert"]["mean"])
    result["human_eval"] = {"file": str(path), "items": len(labels), "policies": policies}
    if result.get("gate") and result["gate"].get("policy_version"):
        result["gate"] = _regate(client, result["gate"], labels, key)
        client.set_tag(parent, "gate_evidence", "human")
    # report.md links the MLflow run as the pipeline's does (where a person opens it now)
    url = env.mlflow_run_url(client.get_run(parent).info.experiment_id, parent)
    _rewrite(folder, result, url)
    web = _relog(client, folder, result, url)
    _republish_on_prefect(result, web, folder)
    return result


def _republish_on_prefect(result: dict, web: str, folder: Path) -> None:
    """The flow run's Prefect artifacts with people's verdict too, or one line saying they
    still show the automatic one (no Prefect server up, or the run's flow run not on it)."""
    try:
        publish.republish_artifacts(result, web)
    except Exception as error:  # noqa: BLE001  (the report is rewritten: only say so)
        # ours say why in words; any other (no server answering, say) by its type too
        why = str(error) if isinstance(error, LookupError) else f"{type(error).__name__}: {error}"
        print(
            f"Prefect artifacts {publish.REPORT_KEY} and {publish.POLICIES_KEY} still show the"
            f" automatic verdict ({why}); the current report is {folder / 'report.md'}"
        )


def _relog(client: MlflowClient, folder: Path, result: dict, url: str) -> str:
    """The MLflow run's report/ and Overview, which the pipeline wrote (flows/publish.py),
    again with people's verdict: else they say the automatic gate's, which no longer holds."""
    parent = result["run"]["mlflow_run_id"]
    plots = sorted(p.name for p in folder.glob("*.png"))
    # plots by their MLflow URLs, as report.log_report links them (MLflow cannot show names)
    web = report.report_markdown(result, url, plots, report.mlflow_artifact_urls(url, "report"))
    client.log_artifact(parent, str(folder / "report.json"), artifact_path="report")
    client.log_text(parent, web, "report/report.md")
    client.set_tag(parent, "mlflow.note.content", report.run_summary(result))
    return web


def _rewrite(folder: Path, result: dict, mlflow_url: str) -> None:
    """report.json and report.md of the run, and of reports/latest if it is that run, each
    whole or as it was (report.write_whole: a write cut short leaves the old file)."""
    plots = sorted(str(p) for p in folder.glob("*.png"))
    markdown = report.report_markdown(result, mlflow_url, plots)  # as the pipeline renders it
    for target in (folder, reports_dir() / "latest"):
        existing = target / "report.json"
        if target != folder and (
            not existing.exists()
            or json.loads(existing.read_text())["run"]["mlflow_run_id"]
            != result["run"]["mlflow_run_id"]
        ):
            continue
        report.write_whole(existing, json.dumps(result, indent=2) + "\n")
        report.write_whole(target / "report.md", markdown)
