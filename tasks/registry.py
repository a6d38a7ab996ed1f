"""The MLflow model registry: register candidates, and the gate that moves `champion`.

Every run registers its policy under `registry.model_name` (alias
`challenger`; `instructflow-policy` by default, `instructflow-policy-smoke`
on the smoke profile) and its reward model beside it, each version tagged
with its report metrics and lineage and described by a model card.
`champion` moves only when the challenger passes the gate (tasks/gate.py): it beats the current champion head to
head (test users, held-out labelers: the lower end of the win rate's 95% CI
above 0.5) without losing more than a margin of public-suite accuracy. With
no champion yet, or a champion that cannot be loaded, the bar is SFT.

Order matters: the head-to-head runs first, on the local checkpoints; only
then is anything written to the registry, and a failure while writing puts
back the versions and aliases that were there before. A failed run never
touches the registry. A kill runs no handler: the versions it was writing keep
the mark they were born with, `champion` having moved to none of them (it moves
last), and the next registry stage marks them interrupted (tasks/registry_pending.py).
"""

from dataclasses import asdict, replace
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from prefect import task
from prefect.artifacts import create_markdown_artifact

from instructflow.models.lm import load_causal_lm
from instructflow.models.tokenizer import tokenizer_digest
from instructflow.tasks import gate_margin, registry_pending, storage_faults, tracking
from instructflow.tasks.concurrency import registry_slot
from instructflow.tasks.evaluation import EvalConfig, Policy, head_to_head
from instructflow.tasks.gate import (
    AliasEffect,
    GateConfig,
    GateDecision,
    alias_effect,
    decide,
    decision_tags,
    gate_markdown,
    gate_summary,
    rule_verdict,
)
from instructflow.tasks.model_card import (
    describe_registered_model,
    describe_reward_models,
    model_card,
    reward_model_card,
)
from instructflow.tasks.model_lineage import with_lora
from instructflow.tasks.registry_config import POLICY_MODEL  # noqa: F401  (re-exported)
from instructflow.tasks.registry_flavors import LOGGERS, create_version
from instructflow.tasks.registry_lookup import (
    alias_version,  # noqa: F401  (re-exported: flows and tests call registry.<name>)
    champion_version,
    make_champion,
    reconcile_champion,
    write_card,
)
from instructflow.tasks.registry_rival import choose_incumbent
from instructflow.tasks.registry_snapshot import RegistrySnapshot
from instructflow.tasks.registry_weights import (
    card_source,
    confirm_reuse,
    registered_version,
    reuse_note,
    same_weights,
    weight_tags,
    weights_digest,
)
from instructflow.tasks.stage import import_closure_digest, mark_done, prefect_options


def _tag_values(tags: dict) -> dict[str, str]:
    return {k: str(v) for k, v in tags.items() if v is not None}


def register(
    model_dir: str, name: str, kind: str, tags: dict, description: str | None = None
) -> str:
    """Register the HF checkpoint (`kind` policy or reward_model, logged in the active run);
    return the version.

    Weights a version already holds (an earlier run's, registered from any
    folder) keep that version and its lineage: registering again would only make
    a duplicate. A new version is tagged with its weights' digest. Its writes end
    here, so its being-written mark is cleared (a stage's candidate keeps it longer).
    """
    version = _register(model_dir, name, kind, tags, description)[0]
    registry_pending.finish(MlflowClient(), [(name, version)])
    return version


def _register(
    model_dir: str, name: str, kind: str, tags: dict, description: str | None = None
) -> tuple[str, bool]:
    """`register`, and whether it made a new version (False: one already held the weights)."""
    existing = registered_version(MlflowClient(), name, model_dir)
    if existing is not None:
        return existing, False
    info = LOGGERS[kind](model_dir, name)
    # Born marked as being written (one write: no kill falls between); the stage clears the
    # mark once all its writes are done (tasks/registry_pending.py).
    tags = tags | weight_tags(model_dir) | registry_pending.pending_tags()
    version = create_version(MlflowClient(), info, name, _tag_values(tags))
    if description:
        MlflowClient().update_model_version(name, version.version, description=description)
    return str(version.version), True


def register_candidate(
    client: MlflowClient,
    names: tuple[str, str],
    dirs: tuple[str, str],
    lineage: dict,
    policy_tags: dict,
    rm_metrics: dict,
    rm_lora: dict[str, str] | None = None,
) -> tuple[str, str]:
    """Register the reward model and the policy (alias `challenger`) from `dirs`, under
    `names` (policy, RM), both tagged with the run's lineage; an RM registered here gets
    its card. `lineage`'s `lora` is the policy's; the RM's is `rm_lora` (model_lineage.lora_lineage,
    none when None): each says the adapters merged into its own weights. Returns the
    (policy, RM) versions."""
    (name, rm_name), (policy_dir, rm_dir) = names, dirs
    rm_lineage = with_lora(lineage, rm_lora or {})
    rm_version, new_rm = _register(rm_dir, rm_name, "reward_model", rm_lineage | rm_metrics)
    tags = {"reward_model_name": rm_name, "reward_model_version": rm_version}
    version, new_policy = _register(policy_dir, name, "policy", lineage | policy_tags | tags)
    client.set_registered_model_alias(name, "challenger", version)
    if not new_rm:  # its card and figures stay the first run's: no gate writes to a reward model
        registry_pending.mark_rewrite(client, rm_name, rm_version)
        confirm_reuse(client, rm_name, rm_version, rm_lineage, {})
    if source := card_source(client, rm_name, rm_version, new_rm, rm_lineage, rm_metrics):
        card = reward_model_card(rm_name, rm_version, *source, (name, version))
        client.update_model_version(rm_name, rm_version, description=card)
    if not new_policy:  # its figures now the gate's run's, as its gate tags and card are
        # Not the champion: a mark makes evaluate and promote refuse it, and the champion
        # people serve has whole weights; a kill leaves only its figures partly this run's.
        if champion_version(client, name) != version:
            registry_pending.mark_rewrite(client, name, version)
        confirm_reuse(client, name, version, lineage, policy_tags | tags)
    return version, rm_version


def registered_block(name: str, held: str | None, policy_dir: str) -> dict:
    """The gate block's word on registering: a new version, or the version that already
    held these weights (`held`, looked up before registering) and why none was added."""
    digest = weights_digest(policy_dir)
    block = {"registered": "existing" if held else "new", "weights_digest": digest}
    return block | ({"note_registered": reuse_note(name, held, digest)} if held else {})


# A passed gate whose run does not ask anyone: what a person does to promote it.
APPROVAL_NOTE = "approval required: promote by hand (instructflow promote)"


def record_decision(
    client: MlflowClient,
    name: str,
    version: str,
    decision: GateDecision,
    effect: AliasEffect,
    evidence: str,
    by: str = "gate",
    approval_asked: bool = False,
) -> GateDecision:
    """Tag the version with the gate's decision and whose verdict it is (`evidence`: a tag
    a later gate on other evidence overwrites), and make it champion if `effect` says so
    (`by`: whose verdict moved it, the gate's or people's rankings: "human").

    A passed gate awaiting approval says in its reason how to promote by hand, unless
    `approval_asked`: the running flow asks a person on Prefect's form (flows/approval.py).
    Returns the decision as tagged.
    """
    if effect.awaiting_approval and not approval_asked:
        decision = replace(decision, reason=f"{decision.reason}; {APPROVAL_NOTE}")
    for key, value in decision_tags(decision).items():
        client.set_model_version_tag(name, version, key, value)
    client.set_model_version_tag(name, version, "gate_evidence", evidence)
    if effect.promote:
        make_champion(client, name, version, by)
    return decision


def complete_and_promote(
    client: MlflowClient, written: tuple[tuple[str, str], ...], promote: bool, by: str = "gate"
) -> None:
    """End a registry stage's writes: clear the being-written mark of the (name, version)s
    in `written` (the policy's first), then move `champion` to the policy's version if
    `promote`, so `champion` never points at a half-written version, and rewrite the
    registered models' pages (where `champion` stands now; what the RMs hold, how to load)."""
    registry_pending.finish(client, written)
    (name, version), (rm_name, _) = written
    if promote:
        make_champion(client, name, version, by)
    describe_reward_models(client, rm_name, name)
    describe_registered_model(client, name)


def record_gate(
    model_name: str, versions: tuple[str, str], decision: GateDecision, gate: dict
) -> dict[str, float]:
    """The gate's figures and tags on the active (registry stage's) MLflow run, which logged
    the versions' models, and its Prefect artifact `promotion-gate`: the
    same for a run on the embedded world and one on a dataset. Returns the figures."""
    policy_version, rm_version = versions
    metrics = {
        "registry/gate_win_rate": decision.win_rate,
        "registry/gate_ci_low": decision.ci95[0],
        "registry/gate_ci_high": decision.ci95[1],
        "registry/promoted": float(gate["promoted"]),
    }
    tracking.log_metrics(metrics)  # no verdict (NaN: a dataset without one) is left out
    mlflow.set_tags(
        {
            "policy_version": policy_version,
            "reward_model_version": rm_version,
            "gate_decision": rule_verdict(decision.promote),
            "gate_incumbent": decision.incumbent,
            "policy_registered": gate["registered"],
            "policy_weights_digest": gate["weights_digest"],
        }
    )
    gate_artifact(model_name, policy_version, decision, gate)
    return metrics


def gate_artifact(model_name: str, version: str, decision: GateDecision, gate: dict):
    """The flow run's Prefect artifact `promotion-gate`: the gate's decision on `version`."""
    create_markdown_artifact(
        markdown=gate_markdown(model_name, version, decision, gate),
        key="promotion-gate",
        description=gate_summary(model_name, version, gate),
    )


def republish_gate(model_name: str, result: dict) -> None:
    """The `promotion-gate` artifact of a registry stage Prefect served from its cache.

    An artifact belongs to the flow run whose task made it, and a cached task runs nothing:
    the re-run's flow run had none, while its report shows the gate block of the run before.
    """
    decision = GateDecision(**result["decision"])
    gate_artifact(model_name, result["policy_version"], decision, result["gate"])


def tag_parent_run(policy_version: str, passed: bool) -> None:
    """The pipeline's parent run (the active run) names the version its gate judged."""
    mlflow.set_tags({"policy_version": policy_version, "gate_decision": rule_verdict(passed)})


# --- Prefect wrapper ------------------------------------------------------------

REGISTRY_CODE = import_closure_digest(
    "instructflow.tasks.registry",
    # loaded by MLflow as code files with the registered models, not imported
    "instructflow.tasks.serving.reward_model",
)


@task(**prefect_options("register-and-gate", REGISTRY_CODE))
def register_and_gate_task(
    candidate: str,
    policy_dir: str,
    rm_dir: str,
    sft_dir: str,
    profile_dir: str,
    eval_cfg: EvalConfig,
    cfg: GateConfig,
    model_name: str,
    reward_model_name: str,
    lineage: dict,
    policy_metrics: dict,
    rm_metrics: dict,
    seed: int,
    out_dir: str,
    parent_run_id: str,
    candidate_note: str | None = None,
    rm_lora: dict[str, str] | None = None,
    judge_trusted: bool | None = None,
    judge_trust_reason: str | None = None,
) -> dict:
    """Judge the candidate against the champion (or SFT), then register it and record the gate.

    Nothing is written to the registry before the head-to-head has finished;
    a failure while writing restores the versions and aliases found at the start.
    candidate_note: said on the card and in the gate block (PPO kept SFT's weights).
    judge_trusted, judge_trust_reason: the report's verdict on the held-out judge, said on
    the card beside the judge's figure (scalars: the stage's cache key holds them).
    """
    storage_faults.check_reports_writable()  # the report follows: before any registry write
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    client = MlflowClient()
    with tracking.stage_run("registry", parent_run_id) as run, registry_slot():
        incumbent, incumbent_name, note = choose_incumbent(client, model_name, policy_dir, sft_dir)
        if note:
            print(note, flush=True)
        win_margin, margin_source = gate_margin.resolve(cfg.win_margin, cfg.win_margin_from)
        match_cfg = eval_cfg.model_copy(update={"max_prompts": cfg.max_prompts})
        challenger = Policy("challenger", Path(policy_dir))
        match = head_to_head(challenger, incumbent, Path(profile_dir), match_cfg, seed)
        win = match["win_rate"]
        # decided once, by weight digest: the report records it for `eval import`'s regate
        plays_itself = same_weights(policy_dir, incumbent.model_dir)
        decision = decide(
            win["mean"],
            tuple(win["ci95"]),
            match["public_challenger"],
            match["public_incumbent"],
            cfg.public_suite_margin,
            incumbent_name,
            win_margin,
            plays_itself,
        )
        gate = {
            "model_name": model_name,
            "candidate": candidate,
            "auto_promote": cfg.auto_promote,
            "public_suite_margin": cfg.public_suite_margin,
            "win_margin": win_margin,
            "win_margin_source": margin_source,
            "incumbent": incumbent_name,
            "note": note,
            "evidence": match["judged_by"],
            "prompts": match["prompts"],
            "win_rate": win,
            "public_suite": {
                "challenger": match["public_challenger"],
                "incumbent": match["public_incumbent"],
            },
            "promote": decision.promote,
            "reason": decision.reason,
            "candidate_holds_incumbent_weights": plays_itself,
        } | ({"candidate_note": candidate_note} if candidate_note else {})
        _, tokenizer = load_causal_lm(policy_dir)
        lineage = lineage | {"tokenizer_digest": tokenizer_digest(tokenizer)}

        held = registered_version(client, model_name, policy_dir)  # these weights, if registered
        snapshot = RegistrySnapshot.take(client, [model_name, reward_model_name])
        try:
            for line in registry_pending.mark_interrupted(client, (model_name, reward_model_name)):
                print(line, flush=True)
            if mended := reconcile_champion(client, model_name):
                print(mended, flush=True)
            policy_version, rm_version = register_candidate(
                client,
                (model_name, reward_model_name),
                (policy_dir, rm_dir),
                lineage,
                policy_metrics | {"policy": candidate},
                rm_metrics,
                rm_lora,
            )
            # With approval required, a passed gate waits for the person this flow asks next.
            effect = alias_effect(decision.promote, cfg.auto_promote, cfg.require_approval)
            written = ((model_name, policy_version), (reward_model_name, rm_version))
            # `champion` moves last, once the version is whole (complete_and_promote)
            tagged = replace(effect, promote=False)
            record_decision(
                client,
                model_name,
                policy_version,
                decision,
                tagged,
                gate["evidence"],
                approval_asked=True,
            )
            champion = policy_version if effect.promote else champion_version(client, model_name)
            gate |= {
                "policy_version": policy_version,
                "promoted": effect.promote,
                "awaiting_approval": effect.awaiting_approval,
                "require_approval": cfg.require_approval,
                "champion": champion,
            } | registered_block(model_name, held, policy_dir)
            origin = client.get_model_version(model_name, policy_version).tags if held else None
            trust = {"trustworthy": judge_trusted, "trust_reason": judge_trust_reason}
            judge = None if judge_trusted is None else trust
            card = model_card(
                model_name, policy_version, lineage, policy_metrics, gate, origin, judge
            )
            write_card(client, model_name, policy_version, card)  # with where champion is
            complete_and_promote(client, written, effect.promote)
        except BaseException as error:
            snapshot.restore_after(client, error)
            raise

        metrics = record_gate(model_name, (policy_version, rm_version), decision, gate)
        result = {
            "policy_version": policy_version,
            "reward_model_version": rm_version,
            "decision": asdict(decision),
            "gate": gate,
            "champion": gate["champion"],
            "mlflow_run_id": run.info.run_id,
            "metrics": metrics,
        }
        return mark_done(out, result)
