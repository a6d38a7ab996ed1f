"""The model card: the description of each registered policy version.

A person opening the version in the MLflow UI reads where it came from
(profile, base model, tokenizer, data), what it scored, and what the
promotion gate saw and decided.
"""

from instructflow.tasks.model_card_evaluation import evaluation_lines, fmt
from instructflow.tasks.registry_pending import WRITE_TAG, is_incomplete

# The tag prefix of the run that last trained a reused version's weights again
# (tasks/registry_weights.py writes them; the card and the registry's status read them).
CONFIRMED = "last_confirmed_by_"

LINEAGE_ROWS = [
    ("profile", "profile"),
    ("base model", "base_model"),
    ("LoRA (adapters merged into these weights)", "lora"),
    ("tokenizer digest", "tokenizer_digest"),
    ("data version (DVC md5)", "dvc_data_md5"),
    # A run on a user's dataset: which folder, split how, and (after it) each table's md5.
    # Without them the card of such a version named no data at all ("untracked" above).
    ("dataset (--data)", "data_dir"),
    ("split rule", "split_rule"),
    ("data NOT the version its .dvc file records (--allow-data-mismatch)", "data_mismatch"),
    ("seed", "seed"),
    ("git commit", "git_commit"),
    ("MLflow parent run", "mlflow_parent_run_id"),
    ("Prefect flow run", "prefect_flow_run_id"),
]
# A lineage id and the key of its page's URL: the card links the id when the URL is known.
LINKS = {
    "mlflow_parent_run_id": "mlflow_parent_run_url",
    "prefect_flow_run_id": "prefect_flow_run_url",
}


def _value(lineage: dict, key: str) -> str:
    """A lineage value as code text, a Markdown link to its page when the lineage has one."""
    url = lineage.get(LINKS.get(key, ""))
    return f"[`{lineage[key]}`]({url})" if url else f"`{lineage[key]}`"


TABLE_MD5 = "data_md5_"  # + a dataset table's name: its md5 (flows/dataset_gate.py's tags)


def lineage_lines(lineage: dict) -> list[str]:
    lines = []
    for label, key in LINEAGE_ROWS:
        if key in lineage:
            lines.append(f"- {label}: {_value(lineage, key)}")
        if key == "split_rule":  # the dataset's tables, after its folder and split
            tables = sorted(k for k in lineage if k.startswith(TABLE_MD5))
            lines += [f"- md5 of `{k.removeprefix(TABLE_MD5)}`: `{lineage[k]}`" for k in tables]
    return lines


AWAITING = "passed, awaiting a person's approval"


def _verdict(gate: dict) -> str:
    if gate.get("awaiting_approval"):
        return AWAITING
    return "promoted" if gate["promoted"] else "not promoted"


def answered(card: str, decision: str) -> str:
    """`card` once a person has answered its gate: the gate's line no longer awaits one."""
    return card.replace(
        f"- decision: {AWAITING}", f"- decision: passed, then {decision} (Approval)"
    )


def approval_section(
    decision: str, reviewer: str, reason: str, champion: str | None, moved: bool, note: str = ""
) -> str:
    """The card's closing section once a person has answered a passed gate."""
    effect = "moved `champion` here" if moved else "left `champion` unchanged"
    where = f"v{champion}" if champion else "none"
    lines = [
        "",
        "## Approval",
        "",
        f"- decision: {decision} by {reviewer} ({effect}; champion: {where})",
        f"- reason: {reason}",
    ]
    if note:
        lines.append(f"- note: {note}")
    return "\n".join(lines) + "\n"


HUMAN_TITLE = "People's rankings"


def with_human_verdict(card: str, gate: dict) -> str:
    """`card` with a closing section on the gate decided again on people's rankings
    (`instructflow eval import`); an earlier import's section is dropped, not repeated,
    and every other section (an approval given since, say) kept."""
    sections = card.split("\n## ")
    kept = "\n## ".join(s for s in sections if not s.startswith(HUMAN_TITLE + "\n"))
    lines = ["", f"## {HUMAN_TITLE}", "", *_gate_lines(gate, public_suite=False)]
    return kept.rstrip("\n") + "\n" + "\n".join(lines) + "\n"


JUDGE_EVIDENCE = "held-out judge"  # a dataset run's gate: no labelers, no public suite


def played(gate: dict) -> str:
    """Whom the gate's head-to-head played, judged how, on how many prompts."""
    prompts = gate.get("prompts")
    on = f"{prompts} prompts" if prompts is not None else "the evaluation's test prompts"
    return f"{gate['incumbent']} ({gate['evidence']}, {on})"


CONFIRMED_TEXT = (
    "The latest run that trained these weights again (tags `last_confirmed_by_*`); the "
    "evaluation and the promotion gate below are its."
)


# How a person makes a version champion by hand (flows/cli.py `promote`): it moves the alias
# and records who, when and why on the version.
PROMOTE_COMMAND = '`instructflow promote --model {name} --version {version} --reason "..."`'


def promote_button_line(name: str, version: str) -> str:
    """The card's first line. MLflow's version page shows a prominent "Promote model" button
    beside the card: it copies the version into another registered model and leaves
    `champion` where it was, so the card says so, and what to run instead."""
    command = PROMOTE_COMMAND.format(name=name, version=version)
    return (
        "MLflow's **Promote model** button copies this version into another registered "
        f"model; it does not make it champion. To make it champion by hand, run {command} "
        "(the promotion gate moves `champion` by itself)."
    )


# The gate samples its own match, so its win rate differs from the Evaluation's
# win_rate_vs_sft even against SFT (0.438 there beside 0.500 above, on one smoke card).
GATE_MATCH = (
    "The gate's own head-to-head, sampled apart from the Evaluation above: its win rate "
    "need not equal the Evaluation's `win_rate_vs_sft`, even when it plays SFT."
)


def model_card(
    name: str,
    version: str,
    lineage: dict,
    metrics: dict[str, float],
    gate: dict,
    origin: dict | None = None,
    judge: dict | None = None,
) -> str:
    """Markdown for the registered version's description, written by the run of `lineage`.

    `origin`: the version's tags when an earlier run registered these weights (the gate
    reused its version): the card then says where the weights come from (that run) apart
    from the run that last confirmed them, whose evaluation and gate it shows.
    `judge`: the run's verdict on its held-out judge (model_card_evaluation.judged_by),
    said beside its figure.
    """
    lines = [f"# {name} v{version}", "", promote_button_line(name, version), ""]
    lines += ["## Where it comes from", ""]
    if origin is not None:
        lines += [*lineage_lines(origin), "", "## Last confirmed by", "", CONFIRMED_TEXT, ""]
    if gate.get("candidate"):
        lines.append(f"- policy: `{gate['candidate']}` (the run's candidate)")
    if gate.get("candidate_note"):
        lines.append(f"- note: {gate['candidate_note']}")
    if gate.get("note_registered"):  # the card now tells of the latest run with these weights
        lines.append(f"- registered: {gate['note_registered']}")
    lines += lineage_lines(lineage)
    # a dataset run's win rate is its judge's alone: nothing to tell apart
    lines += evaluation_lines(lineage, metrics, judge, gate.get("evidence") != JUDGE_EVIDENCE)
    lines += ["", "## Promotion gate", "", GATE_MATCH, ""]
    # a dataset run's gate has no public suite to report
    lines += _gate_lines(gate, public_suite=gate["evidence"] != JUDGE_EVIDENCE)
    if gate.get("note"):
        lines.append(f"- note: {gate['note']}")
    return "\n".join(lines) + "\n"


def _gate_lines(gate: dict, public_suite: bool) -> list[str]:
    """Whom the gate played, the win rate, the public suite if asked, the decision."""
    lines, win = [f"- played: {played(gate)}"], gate["win_rate"]
    if win:
        lines.append(
            f"- win rate: {win['mean']:.3f} (95% CI {win['ci95'][0]:.3f}-{win['ci95'][1]:.3f})"
        )
    if public_suite:
        public = gate["public_suite"]
        # each figure named by its side: "0.242 vs 0.242" left the reader guessing
        lines.append(
            f"- public-suite accuracy: this version {public['challenger']:.3f}"
            f" vs {gate['incumbent']} {public['incumbent']:.3f}"
        )
    lines.append(f"- decision: {_verdict(gate)}: {gate['reason']}")
    return lines


# A training stage's readings of its training (rm/*, sft/*, ppo/*, beside its figures): the
# share of weights that trained (LoRA) and the machine's peak memory, not something the model
# scored (the RM's card, and the report's `training` block, show them apart).
TRAINING_READINGS = ("trainable_fraction", "peak_memory_mb", "process_peak_memory_mb")


def reward_model_card(
    name: str, version: str, lineage: dict, metrics: dict, policy: tuple[str, str]
) -> str:
    """Markdown for a registered reward model version: where it comes from, what it scored."""
    lines = [
        f"# {name} v{version}",
        "",
        f"The reward model registered beside {policy[0]} v{policy[1]}: a pyfunc, "
        "`prompt` and `response` in, `reward` out.",
        "",
        "## Where it comes from",
        "",
        *lineage_lines(lineage),
    ]
    scored = {k: v for k, v in metrics.items() if k not in TRAINING_READINGS}
    if scored:
        lines += ["", "## Evaluation", ""]
        lines += [f"- {key}: {fmt(value)}" for key, value in sorted(scored.items())]
    trained = {k: v for k, v in metrics.items() if k in TRAINING_READINGS}
    if trained:  # how it was trained, not what it scored
        lines += ["", "## Training", ""]
        lines += [f"- {key}: {fmt(value)}" for key, value in sorted(trained.items())]
    return "\n".join(lines) + "\n"


# --- the registered model's description: where `champion` stands --------------------

ALIASES = (
    "Aliases: `champion` is the version in use, one that passed the promotion gate or that a "
    "person promoted (`models:/{name}@champion` loads it); `challenger` is the latest run's "
    "candidate, whatever its gate decided. Each version's description is its model card.\n\n"
    # MLflow's version page offers a blue "Promote model" button: it copies the version
    # into another registered model and leaves `champion` where it was.
    "To make version N champion: "
    + PROMOTE_COMMAND.format(name="{name}", version="N")
    + " (it records who, when and why). MLflow's **Promote model** button does not: it copies "
    "a version into another registered model."
)


def _run(tags: dict) -> str:
    """The run whose gate judged a version (the one that registered it, or the latest that
    reused it: its `last_confirmed_by_*` tags), linked when its page is known."""
    if tags.get(CONFIRMED + "mlflow_parent_run_id"):
        tags = {k.removeprefix(CONFIRMED): v for k, v in tags.items() if k.startswith(CONFIRMED)}
    run, url = tags.get("mlflow_parent_run_id"), tags.get("mlflow_parent_run_url")
    if not run:
        return "its run"
    return f"run [`{run}`]({url})" if url else f"run `{run}`"


# promoted_by of a champion whose alias was set outside instructflow (registry_lookup's
# reconcile_champion found it so): no gate, person's form or reason recorded it.
OUTSIDE = "alias set outside instructflow"


def _promoted(tags: dict) -> str:
    """How the champion got there, from its version's tags."""
    by, reason = tags.get("promoted_by"), tags.get("gate_reason", "")
    if by == OUTSIDE:
        return "its alias was set outside instructflow (MLflow's UI or client): no reason recorded"
    if by == "manual":
        return f"promoted by hand (`instructflow promote`): {tags.get('promotion_reason', '')}"
    if by == "approval":
        who = tags.get("approval_by", "a person")
        return (
            f"approved by {who} after the gate of {_run(tags)}: {tags.get('approval_reason', '')}"
        )
    if by == "human" and tags.get("promotion_reason"):  # registry_lookup.put_back
        return f"put back on people's rankings (`instructflow eval import`): {tags['promotion_reason']}"
    if by == "human":
        return (
            f"promoted on people's rankings (`instructflow eval import`) of {_run(tags)}: {reason}"
        )
    if tags.get("gate_promote") == "False":  # a later run reused it: its gate's tags are there
        return (
            f"promoted by an earlier gate (the gate of {_run(tags)} reused this version and "
            f"left it champion: {reason})"
        )
    return f"promoted by the gate of {_run(tags)}" + (f": {reason}" if reason else "")


CHAMPION_TITLE = "Champion"


def champion_lines(tags: dict) -> list[str]:
    """Whether the version is champion, said from its tags (tasks/registry_lookup.py
    writes them whenever `champion` moves to or from it); none if it never was."""
    if tags.get("promoted_by"):
        since = f" since {tags['promoted_at']}" if tags.get("promoted_at") else ""
        before = tags.get("previous_champion")
        after = f"; it replaced v{before}" if before else "; the first champion"
        lines = [f"- **champion now**{since}: {_promoted(tags)}{after}"]
    elif tags.get("replaced_by"):
        by = tags["replaced_by"]
        when = "`champion` was unset" if by == "none" else f"v{by} replaced it"
        lines = [
            f"- **not champion** since {tags.get('replaced_at', '?')}, when {when} "
            "(the registered model's description names the champion now)"
        ]
    else:
        return []
    history = (tags.get("promotion_history") or "").splitlines()
    return lines + (["- history (tag `promotion_history`):"] + [f"  - {h}" for h in history])


def with_champion_status(card: str, tags: dict) -> str:
    """`card` with its Champion section (after the title) rewritten from `tags`: the gate's
    decision further down is history, this section is where `champion` stands."""
    # A card that is only sections (a version registered without one) has no title before them.
    head, *sections = ("\n" + card if card.startswith("## ") else card).split("\n## ")
    sections = [s for s in sections if not s.startswith(CHAMPION_TITLE + "\n")]
    lines = champion_lines(tags)
    status = [f"{CHAMPION_TITLE}\n\n" + "\n".join(lines) + "\n"] if lines else []
    if not head.strip():
        return "## " + "\n## ".join([*status, *sections]) if status or sections else ""
    return "\n## ".join([head.rstrip("\n") + "\n", *status, *sections])


def _decided(tags: dict) -> str:
    return tags.get("gate_reason") or "no gate decision recorded"


def registry_status(name: str, versions: dict[str, dict], aliases: dict[str, str]) -> str:
    """Markdown for the registered model's description: which version is champion and how
    it got there, or that there is none yet; the challenger; what the aliases mean.
    `versions`: each version's tags; one a run stopped while writing (tasks/registry_pending.py)
    is named apart, as no candidate."""
    lines = [f"# {name}", ""]
    incomplete = sorted((v for v, tags in versions.items() if is_incomplete(tags)), key=int)
    versions = {v: tags for v, tags in versions.items() if v not in incomplete}
    champion, challenger = aliases.get("champion"), aliases.get("challenger")
    if champion is not None:
        lines.append(f"**Champion: v{champion}**, {_promoted(versions.get(champion, {}))}")
    elif versions:
        latest = max(versions, key=int)
        passed = any(tags.get("gate_promote") == "True" for tags in versions.values())
        what = "been promoted" if passed else "passed the gate"
        lines.append(
            f"**No champion yet**: no version has {what} "
            f"(latest: v{latest}, {_decided(versions[latest])})"
        )
    else:
        lines.append("**No champion yet**: no version registered")
    if challenger is not None and challenger != champion:
        tags = versions.get(challenger, {})
        decided = f": {_decided(tags)}" if champion is not None else ""  # else said above
        lines += ["", f"Challenger: v{challenger} ({_run(tags)}){decided}"]
    if incomplete:
        lines += [
            "",
            f"Incomplete: v{', v'.join(incomplete)} (tag `{WRITE_TAG}`): the run "
            "writing it was stopped before it finished (or is writing it still); no "
            "candidate, never champion",
        ]
    return "\n".join([*lines, "", ALIASES.format(name=name)]) + "\n"


def describe_registered_model(client, name: str) -> str:
    """Write registry_status as `name`'s description (MLflow's registered model page) and
    return it: after every write that may move `champion`, so it never goes stale."""
    model = client.get_registered_model(name)
    found = client.search_model_versions(f"name = '{name}'")
    versions = {str(v.version): dict(v.tags or {}) for v in found}
    aliases = {alias: str(v) for alias, v in (model.aliases or {}).items()}
    text = registry_status(name, versions, aliases)
    client.update_registered_model(name, description=text)
    return text


def describe_reward_models(client, name: str, policy_name: str) -> str:
    """Write what `name` holds as its description (MLflow's registered model page, else
    empty) and return it: the reward models registered beside `policy_name`'s versions
    (a policy version's tag `reward_model_version` names its own) and how to load one."""
    found = client.search_model_versions(f"name = '{name}'")
    versions = [str(v.version) for v in found if not is_incomplete(v.tags)]  # none half-written
    latest = f"v{max(versions, key=int)}" if versions else "none yet"
    text = (
        f"# {name}\n\n"
        f"Reward models registered beside the versions of `{policy_name}` (each of its "
        "versions names its own in the tag `reward_model_version`). Latest: "
        f"{latest}. Each version's description is its card: where it comes from, what it "
        'scored. A pyfunc: `mlflow.pyfunc.load_model("models:/'
        f'{name}/<version>")` scores a table of `prompt` and `response` (column `reward`).\n'
    )
    client.update_registered_model(name, description=text)
    return text
