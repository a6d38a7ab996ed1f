"""A dataset run's registry stage: the candidate plays its rival, judged by the held-out judge, then is registered.

The rival is the champion of the dataset's registered model (SFT while there is
none, or when the champion holds the candidate's very weights); the gate acts on
the judge's win rate only when the judge itself is trustworthy
(tasks/judge_trust.py), and with `gate.require_approval` a passed
gate waits for a person (flows/approval.py, in the calling flow). One gate at a
time (the registry's slot), and registry writes are undone if one fails.
`instructflow eval import` later replaces the judge's verdict with people's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import mlflow
from transformers import AutoTokenizer

from instructflow.flows.params import PipelineParams
from instructflow.models.tokenizer import tokenizer_digest
from instructflow.tasks import (
    env,
    own_evaluation,
    registry,
    registry_lookup,
    registry_pending,
    registry_rival,
    storage_faults,
    tracking,
)
from instructflow.tasks.concurrency import registry_slot
from instructflow.tasks.evaluation import Policy, flat_metrics
from instructflow.tasks.gate import (
    alias_effect,
    base_model_caveat,
    held_back,
    judge_decision,
    with_caveat,
)
from instructflow.tasks.model_card import JUDGE_EVIDENCE, model_card
from instructflow.tasks.model_lineage import lora_lineage, mismatch_lineage
from instructflow.tasks.registry_snapshot import RegistrySnapshot
from instructflow.tasks.registry_weights import same_weights


@dataclass(frozen=True)
class GateInputs:
    """What a dataset run's registry stage registers and judges, beside the report's figures."""

    candidate: str  # the policy it registers: its row in the report's policies
    policy_dir: str  # the candidate's checkpoint
    rm_dir: str  # the reward model registered beside it
    sft_run_id: str  # the MLflow run of the SFT both started from (lineage)
    profile_dir: Path  # the dataset's profile folder: the gate's test prompts
    judge_dir: Path  # the held-out judge that compares the candidate with its rival
    candidate_note: str | None = None  # PPO kept SFT's weights: said on the model card
    sft_dir: str | None = None  # SFT's checkpoint: a candidate holding its weights cannot pass


def _rival(params, inputs: GateInputs, result, policy_name: str, champion: str | None):
    """Whom the gate plays, and the win rate the judge gives: the champion, if there is one
    (a new version must beat the one it would replace), else SFT; (incumbent, win, prompts)."""
    if champion is None:
        return "sft", result["policies"][inputs.candidate].get("win_rate_vs_sft"), None
    incumbent = f"champion v{champion}"
    # The candidate is sampled again: the evaluation sampled it at seed + its place in
    # the policy list, the match samples it at the run's seed.
    match = own_evaluation.judged_match(
        Policy(inputs.candidate, Path(inputs.policy_dir)),
        Policy(incumbent, Path(registry_rival.local_checkpoint(policy_name, champion))),
        inputs.profile_dir,
        params.stage("evaluation"),
        params.seed,
        inputs.judge_dir,
    )
    return incumbent, match["win_rate"], match["prompts"]


def _holds_sft_weights(inputs: GateInputs) -> bool:
    return inputs.sft_dir is not None and same_weights(inputs.policy_dir, inputs.sft_dir)


def _champion_from_elsewhere(
    client, policy_name: str, champion: str | None, data_dir: str
) -> str | None:
    """A note when the champion was trained on another folder than this run's: registered
    models are named by the dataset folder's name, so two datasets in folders of one name
    share one (a moved dataset does too)."""
    if champion is None:
        return None
    theirs = client.get_model_version(policy_name, champion).tags.get("data_dir")
    if not theirs or theirs == data_dir:
        return None
    return (
        f"champion v{champion} of {policy_name} was trained on {theirs}, this run on {data_dir}: "
        f"folders of one name ({Path(data_dir).name}) share a registered model; if they are "
        "different datasets, set registry.model_name to keep them apart"
    )


def _lineage(params, result: dict, inputs: GateInputs, client) -> dict:
    """Where the registered versions came from: their tags (the model card links the runs)."""
    run = result["run"]
    experiment_id = client.get_run(run["mlflow_run_id"]).info.experiment_id
    return {
        "git_commit": run["git_commit"],
        "prefect_flow_run_id": run["prefect_flow_run_id"],
        "prefect_flow_run_url": env.prefect_flow_run_url(run["prefect_flow_run_id"]),
        "mlflow_parent_run_id": run["mlflow_run_id"],
        "mlflow_parent_run_url": env.mlflow_run_url(experiment_id, run["mlflow_run_id"]),
        "profile": params.profile,
        "seed": params.seed,
        "sft_run_id": inputs.sft_run_id,
        "data_dir": str(Path(params.data).resolve()),
        "split_rule": result["dataset"]["split_rule"],  # whom the card's evaluation is on
        "dvc_data_md5": run["dvc_data_md5"],
        **mismatch_lineage(run),
        "base_model": params.base_model,
        **lora_lineage(params, inputs.candidate),  # the RM's: register_candidate's rm_lora
        "tokenizer_digest": tokenizer_digest(AutoTokenizer.from_pretrained(inputs.policy_dir)),
        **{f"data_md5_{name}": t["md5"] for name, t in result["dataset"]["tables"].items()},
    }


def register_and_gate(
    params: PipelineParams, result: dict, inputs: GateInputs
) -> tuple[dict, mlflow.ActiveRun]:
    """Register the candidate (alias `challenger`) and the RM, then let the gate decide; the
    gate block and the registry stage's MLflow run (which shows the gate's evidence).

    On a dataset the gate's evidence is the held-out judge: the candidate's win
    rate against the champion (SFT while there is none) as the judge sees it,
    acted on only if the judge is trustworthy (tasks/judge_trust.py). `instructflow
    eval import` later replaces it with people's rankings. Registry writes are
    undone if one fails.
    """
    storage_faults.check_reports_writable()  # the report follows: before any registry write
    candidate = inputs.candidate
    client = registry.MlflowClient()
    lineage = _lineage(params, result, inputs, client)
    # The version's figures as tags, as on the embedded world (the judge's win rates).
    figures = flat_metrics({candidate: result["policies"][candidate]})
    policy_metrics = {k.split("/", 2)[2]: round(v, 4) for k, v in figures.items()}
    cfg = params.stage("gate")
    policy_name, rm_name = params.registry.names(params.profile, params.data)
    rm_metrics = {k: round(v, 4) for k, v in result.get("reward_model", {}).items()}
    # One gate at a time, as on the world: two runs never both judge against one champion.
    with tracking.stage_run("registry", result["run"]["mlflow_run_id"]) as run, registry_slot():
        played = registry_lookup.champion_version(client, policy_name)  # as the match finds it
        # none when the champion holds these very weights: it would play itself
        champion = registry_rival.rival_champion(client, inputs.policy_dir, policy_name)
        incumbent, win, prompts = _rival(params, inputs, result, policy_name, champion)
        elsewhere = _champion_from_elsewhere(client, policy_name, champion, lineage["data_dir"])
        accuracy = result["judge"]["accuracy_heldout_pairs"]
        plays_itself = incumbent == "sft" and _holds_sft_weights(inputs)
        pairs = result["judge"]["test_pairs"]
        decision = judge_decision(win, accuracy, pairs, cfg, incumbent, plays_itself)
        theirs = registry_rival.incumbent_base_model(client, policy_name, incumbent)
        decision = with_caveat(decision, base_model_caveat(incumbent, theirs, params.base_model))
        held = registry.registered_version(client, policy_name, inputs.policy_dir)
        snapshot = RegistrySnapshot.take(client, [policy_name, rm_name])
        try:
            for line in registry_pending.mark_interrupted(client, (policy_name, rm_name)):
                print(line, flush=True)
            version, rm_version = registry.register_candidate(
                client,
                (policy_name, rm_name),
                (inputs.policy_dir, inputs.rm_dir),
                lineage,
                policy_metrics | {"policy": candidate},
                rm_metrics,
                lora_lineage(params, "reward_model"),
            )
            # Read again before `champion` moves: one moved meanwhile was never played.
            now = registry_lookup.champion_version(client, policy_name)
            decision = held_back(decision, played, now)
            effect = alias_effect(decision.promote, cfg.auto_promote, cfg.require_approval)
            # approval_asked: the calling flow pauses for a person (flows/approval.py);
            # `champion` moves last, once the version is whole (complete_and_promote)
            tagged = replace(effect, promote=False)
            decision = registry.record_decision(
                client, policy_name, version, decision, tagged, JUDGE_EVIDENCE, approval_asked=True
            )
            champion_after = version if effect.promote else now
            gate = _gate_block(cfg, decision, effect, win, accuracy, candidate, policy_name)
            gate |= {"prompts": prompts, "note": elsewhere, "champion": champion_after}
            # the digest verdict the gate acted on: `eval import` reads it, not the note
            gate |= {"candidate_holds_incumbent_weights": plays_itself}
            gate |= {"policy_version": version, "reward_model_version": rm_version}
            gate |= registry.registered_block(policy_name, held, inputs.policy_dir)
            if inputs.candidate_note:
                gate["candidate_note"] = inputs.candidate_note
            origin = client.get_model_version(policy_name, version).tags if held else None
            card = model_card(policy_name, version, lineage, policy_metrics, gate, origin)
            registry_lookup.write_card(client, policy_name, version, card)
            written = ((policy_name, version), (rm_name, rm_version))
            registry.complete_and_promote(client, written, effect.promote)
            # The run that logged the versions shows the gate, as the embedded world's does;
            # it ends here (a lost server waited for), so that a failure in either puts the
            # registry back rather than leave versions of a stage that failed.
            registry.record_gate(policy_name, (version, rm_version), decision, gate)
            tracking.end_finished_run(run.info.run_id)
        except BaseException as error:
            snapshot.restore_after(client, error)
            raise
    return gate, run


def _gate_block(cfg, decision, effect, win, accuracy, candidate, policy_name) -> dict:
    """The report's gate block of a dataset run (the embedded world's, with the judge's evidence)."""
    return {
        "model_name": policy_name,
        "candidate": candidate,
        "auto_promote": cfg.auto_promote,
        "incumbent": decision.incumbent,
        "note": None,
        "evidence": JUDGE_EVIDENCE,
        "judge_accuracy_heldout_pairs": accuracy,
        "prompts": None,  # against SFT: the evaluation's test prompts
        # No `public_suite` (nor its margin): a dataset has none to hold the candidate to,
        # and null figures would read like a suite that was run and measured nothing.
        "win_rate": win,
        "promote": decision.promote,
        "held_back": decision.held_back,  # passed, against a champion that moved meanwhile
        "promoted": effect.promote,
        "require_approval": cfg.require_approval,
        "awaiting_approval": effect.awaiting_approval,
        "reason": decision.reason,
    }
