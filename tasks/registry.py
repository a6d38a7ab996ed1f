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

from mlflow import MlflowClient
from prefect import task

from instructflow.models.lm import load_causal_lm
from instructflow.models.tokenizer import tokenizer_digest
from instructflow.tasks import gate_margin, registry_pending, storage_faults, tracking
from instructflow.tasks.concurrency import registry_slot
from instructflow.tasks.evaluation import EvalConfig, Policy, head_to_head
from instructflow.tasks.gate import (
    GateConfig,
    GateDecision,
    alias_effect,
    base_model_caveat,
    decide,
    held_back,
    with_caveat,
)
from instructflow.tasks.gate_record import (  # re-exported: flows and tests call registry.<name>
    APPROVAL_NOTE,  # noqa: F401
    complete_and_promote,
    gate_artifact,  # noqa: F401
    record_decision,
    record_gate,
    republish_gate,  # noqa: F401
    tag_parent_run,  # noqa: F401
)
from instructflow.tasks.model_card import (
    describe_registered_model,  # noqa: F401  (re-exported: tests call registry.<name>)
    model_card,
    reward_model_card,
)
from instructflow.tasks.model_lineage import with_lora
from instructflow.tasks.registry_config import POLICY_MODEL  # noqa: F401  (re-exported)
from instructflow.tasks.registry_flavors import LOGGERS, create_version
from instructflow.tasks.registry_lookup import (
    alias_version,  # noqa: F401  (re-exported: flows and tests call registry.<name>)
    champion_version,
    reconcile_champion,
    write_card,
)
from instructflow.tasks.registry_rival import choose_incumbent, incumbent_base_model
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
from instructflow.tasks.stage import import_closure_digest, prefect_options
from instructflow.tasks.tracked import finish_stage


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


def judge_candidate(
    client: MlflowClient,
    model_name: str,
    dirs: tuple[str, str],
    profile_dir: str,
    eval_cfg: EvalConfig,
    cfg: GateConfig,
    seed: int,
    base_model: str | None = None,
) -> tuple[GateDecision, dict]:
    """Play the candidate (`dirs`: its checkpoint, SFT's) against the champion or SFT and
    decide, before anything is written: the decision, and the gate block's figures (its
    `promote` and `reason` follow once `champion` is read again: held_back).
    `base_model`: the candidate's (its lineage tag), for the reason to say when the champion
    was trained from another one."""
    policy_dir, sft_dir = dirs
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
    theirs = incumbent_base_model(client, model_name, incumbent_name)
    decision = with_caveat(decision, base_model_caveat(incumbent_name, theirs, base_model))
    figures = {
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
        "candidate_holds_incumbent_weights": plays_itself,
    }
    return decision, figures


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
    a failure while writing, recording the gate or ending the stage's run restores the
    versions and aliases found at the start: a stage that failed leaves no trace there.
    candidate_note: said on the card and in the gate block (PPO kept SFT's weights).
    judge_trusted, judge_trust_reason: the report's verdict on the held-out judge, said on
    the card beside the judge's figure (scalars: the stage's cache key holds them).
    """
    storage_faults.check_reports_writable()  # the report follows: before any registry write
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    client = MlflowClient()
    with tracking.stage_run("registry", parent_run_id) as run, registry_slot():
        dirs = (policy_dir, sft_dir)
        played = champion_version(client, model_name)  # as the head-to-head finds it
        decision, figures = judge_candidate(
            client, model_name, dirs, profile_dir, eval_cfg, cfg, seed, lineage.get("base_model")
        )
        gate = {"model_name": model_name, "candidate": candidate} | figures
        gate |= {"candidate_note": candidate_note} if candidate_note else {}
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
            # Read again before `champion` moves: one moved meanwhile was never played.
            now = champion_version(client, model_name)
            decision = held_back(decision, played, now)
            gate |= {"promote": decision.promote, "reason": decision.reason}
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
            gate |= {
                "policy_version": policy_version,
                "promoted": effect.promote,
                "awaiting_approval": effect.awaiting_approval,
                "require_approval": cfg.require_approval,
                "champion": policy_version if effect.promote else now,
            } | registered_block(model_name, held, policy_dir)
            origin = client.get_model_version(model_name, policy_version).tags if held else None
            trust = {"trustworthy": judge_trusted, "trust_reason": judge_trust_reason}
            judge = None if judge_trusted is None else trust
            card = model_card(
                model_name, policy_version, lineage, policy_metrics, gate, origin, judge
            )
            write_card(client, model_name, policy_version, card)  # with where champion is
            complete_and_promote(client, written, effect.promote)

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
            # The run ends (a lost server waited for) before the stage is marked done, as
            # every stage's (tasks/tracked.py): a marker beside a run left RUNNING would be
            # taken for finished work while MLflow shows the stage still going.
            return finish_stage(out, run.info.run_id, result)
        except BaseException as error:
            snapshot.restore_after(client, error)
            raise
