"""The promotion gate: the rule that decides whether a challenger replaces the champion.

The challenger must beat the incumbent (the current champion, or SFT) head
to head on test users, judged by held-out labelers: the lower end of the win
rate's 95% CI above 0.5 (plus the seed noise a sweep measured), without
losing more than a margin of public-suite accuracy. On a dataset run the
evidence is the held-out judge, acted on only when the judge is trustworthy.
How the inputs are measured: tasks/registry.py; where the decision is written: tasks/gate_record.py.
"""

from dataclasses import asdict, dataclass, replace

from instructflow.tasks.gate_config import GateConfig
from instructflow.tasks.judge_trust import judge_is_trustworthy


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    incumbent: str  # "champion vN" or "sft"
    win_rate: float
    ci95: tuple[float, float]
    public_suite_challenger: float | None  # None: no public suite (a dataset run)
    public_suite_incumbent: float | None
    win_margin: float = 0.0
    held_back: bool = False  # the rule passed, but champion moved while it played (held_back)


def decision_tags(decision: GateDecision) -> dict[str, str]:
    """The model-version tags of a decision, `gate_<field>` (None fields left out): every
    figure (win rate, public-suite accuracies, win margin) to 3 decimals and the CI as
    "[low, high]", as the reason writes them; `gate_held_back` only on a version held back."""
    fields = asdict(decision)
    if not fields["held_back"]:
        del fields["held_back"]
    tags = {
        f"gate_{k}": f"{v:.3f}"
        if isinstance(v, int | float) and not isinstance(v, bool)
        else str(v)
        for k, v in fields.items()
        if v is not None and k != "ci95"
    }
    low, high = decision.ci95
    return tags | {"gate_ci95": f"[{low:.3f}, {high:.3f}]"}


@dataclass(frozen=True)
class AliasEffect:
    """What a gate's verdict may do to `champion`."""

    promote: bool  # move `champion` to the judged version now
    awaiting_approval: bool  # it passed; only a person may move `champion` to it
    restore: bool  # put `champion` back where the judged run's gate found it


def alias_effect(
    passed: bool,
    auto_promote: bool,
    require_approval: bool,
    champion_moved: bool = False,
    promoted_here: bool = False,
    champion_before: bool = True,
    ranked_worse: bool = False,
) -> AliasEffect:
    """What a verdict (`passed`: its promote) may do to the aliases.

    champion_moved: `champion` moved since the gate whose rival the evidence was
    judged against (a later run, a manual promotion): that evidence says nothing
    about the version there now, so no alias moves. promoted_here: that gate made
    the judged version champion; a verdict against it puts `champion` back, unless
    that gate found none (champion_before False) and the verdict only fails to show
    it better (not ranked_worse): putting back nothing leaves no champion to load.
    """
    held = not champion_moved
    return AliasEffect(
        promote=passed and auto_promote and not require_approval and held,
        awaiting_approval=passed and require_approval,
        restore=promoted_here and not passed and held and (champion_before or ranked_worse),
    )


def held_back(decision: GateDecision, played: str | None, now: str | None) -> GateDecision:
    """The decision once `champion` is read again before it would move: `now`, not the
    version the gate found before its head-to-head (`played`; None: there was none).

    What takes no registry slot (MLflow's UI, `promote` without a Prefect API) may move
    `champion` while a gate plays: a passed decision then moves nothing, since it says
    nothing about the version there now. Unchanged when nothing moved or it did not pass.
    """
    if not decision.promote or now == played:
        return decision
    moved = f"champion moved to v{now}" if now else "champion was unset"
    reason = f"{moved} while this run was gating; run again to gate against it ({decision.reason})"
    return replace(decision, promote=False, reason=reason, held_back=True)


def decide(
    win_rate: float,
    ci95: tuple[float, float],
    public_challenger: float | None,
    public_incumbent: float | None,
    margin: float,
    incumbent: str,
    win_margin: float = 0.0,
    same_weights: bool = False,
) -> GateDecision:
    """The gate's rule, separate from how its inputs are measured.

    win_margin: how far above 0.5 the win rate's CI must start (seed noise, from a sweep).
    public_challenger/public_incumbent None: there is no public suite to hold the candidate to.
    same_weights: the candidate holds the incumbent's very weights (PPO kept SFT's): it
    cannot be better than itself, so no win rate promotes it (one that clears the bar is
    sampling noise, which the CI misses one time in twenty).
    """
    has_public = public_challenger is not None and public_incumbent is not None
    reasons = []
    if same_weights:
        reasons.append(f"the candidate holds {incumbent}'s own weights: it cannot beat itself")
    bar = "0.5" if not win_margin else f"0.5 + {win_margin:.3f} (seed noise)"
    if ci95[0] <= 0.5 + win_margin:
        reasons.append(
            f"win rate vs {incumbent} {win_rate:.3f} has 95% CI lower end {ci95[0]:.3f} <= {bar}"
        )
    if has_public and public_challenger < public_incumbent - margin:
        reasons.append(
            f"public-suite accuracy {public_challenger:.3f} is more than {margin} below {incumbent}'s {public_incumbent:.3f}"
        )
    promote = not reasons
    public = (
        f", public suite {public_challenger:.3f} vs {public_incumbent:.3f}" if has_public else ""
    )
    reason = (
        f"beats {incumbent}: win rate {win_rate:.3f} (95% CI {ci95[0]:.3f}-{ci95[1]:.3f}){public}"
        if promote
        else "; ".join(reasons)
    )
    return GateDecision(
        promote, reason, incumbent, win_rate, ci95, public_challenger, public_incumbent, win_margin
    )


def base_model_caveat(incumbent: str, theirs: str | None, ours: str | None) -> str | None:
    """One line when `incumbent` (a champion) was trained from another base model (`theirs`)
    than the candidate (`ours`): a win over it compares two model families, not a run with
    the version it would replace. None when they match, or when either is not recorded (SFT
    shares the candidate's base; a version registered before base models were tagged)."""
    if not theirs or not ours or theirs == ours:
        return None
    return (
        f"not like for like: {incumbent} was trained from base model {theirs}, "
        f"the candidate from {ours}"
    )


def with_caveat(decision: GateDecision, caveat: str | None) -> GateDecision:
    """The decision with `caveat` said after its reason; its verdict stays the rule's."""
    return replace(decision, reason=f"{decision.reason}; {caveat}") if caveat else decision


def judge_decision(
    win: dict | None,
    judge_accuracy: float,
    judge_pairs: int,
    cfg: "GateConfig",
    incumbent: str = "sft",
    same_weights: bool = False,
) -> GateDecision:
    """The gate on a dataset run (no gold, no simulated labelers): the candidate's win rate
    against `incumbent` (the champion, or SFT while there is none) as the held-out judge
    sees it, acted on only when the judge itself is
    trustworthy (its accuracy on `judge_pairs` held-out pairs at least
    `cfg.judge_accuracy_floor`, and better than chance beyond its 95% interval);
    same_weights as for `decide`."""
    if win is None:
        nan = float("nan")
        return GateDecision(
            False, "no held-out judge verdicts to decide on", incumbent, nan, (nan, nan), None, None
        )
    decision = decide(
        win["mean"],
        tuple(win["ci95"]),
        None,
        None,
        cfg.public_suite_margin,
        incumbent,
        cfg.win_margin,
        same_weights,
    )
    trusted, why = judge_is_trustworthy(judge_accuracy, judge_pairs, cfg.judge_accuracy_floor)
    if not trusted:
        return replace(decision, promote=False, reason=f"no automatic promotion: {why}")
    return decision


def gate_verdict(gate: dict) -> str:
    """What the gate did to `champion`, from the gate block (`promoted`, `awaiting_approval`).

    Not `GateDecision.promote`, which says only that the rule passed: with
    `require_approval` or without `auto_promote` a passed gate moves nothing by itself,
    and the artifact said "PROMOTED to champion" while the run waited for a person.
    """
    if gate.get("awaiting_approval"):
        return "PASSED, awaiting a person's approval"
    return "PROMOTED to champion" if gate.get("promoted") else "NOT promoted"


def gate_summary(name: str, version: str, gate: dict) -> str:
    """One line for the artifact's description, which Prefect's artifact list shows: the
    version and what happened to it, without opening the artifact."""
    return f"{name} v{version}: {gate_verdict(gate).lower()}"


def rule_verdict(passed: bool, held: bool = False) -> str:
    """The runs' `gate_decision` tag: whether the gate's rule passed. Not "promoted": with
    approval required, or auto_promote off, a passed gate leaves `champion` where it was.
    "held back" (`held`): it passed against a champion that moved before it could act."""
    if held:
        return "held back"
    return "passed" if passed else "rejected"


def gate_markdown(name: str, version: str, decision: GateDecision, gate: dict) -> str:
    note = gate.get("note")
    return (
        f"# Promotion gate: {name} v{version} {gate_verdict(gate)}\n\n"
        f"- compared with: {decision.incumbent}\n"
        + (f"- note: {note}\n" if note else "")
        + f"- win rate: {decision.win_rate:.3f} (95% CI {decision.ci95[0]:.3f} - {decision.ci95[1]:.3f}); needs lower end > {0.5 + decision.win_margin:.3f}\n"
        + _public_suite_line(version, decision)
        + f"- reason: {decision.reason}\n"
    )


def _public_suite_line(version: str, decision: GateDecision) -> str:
    # A dataset run has no public suite: no line, rather than figures nobody measured.
    if decision.public_suite_challenger is None or decision.public_suite_incumbent is None:
        return ""
    # Each figure named by its side: "0.242 vs 0.242" left the reader guessing which is which.
    return (
        f"- public-suite accuracy: v{version} {decision.public_suite_challenger:.3f}"
        f" vs {decision.incumbent} {decision.public_suite_incumbent:.3f}\n"
    )


SHORT_ANSWERS = 1 / 3
"""A candidate whose answers average less than this share of SFT's length is flagged."""


def short_answers(policies: dict[str, dict], candidate: str) -> str | None:
    """A warning when the candidate answers in a fraction of SFT's words: a policy that
    learned to say (almost) nothing can still win a learned judge's comparisons."""
    mine = (policies.get(candidate) or {}).get("response_length")
    sft = (policies.get("sft") or {}).get("response_length")
    if candidate == "sft" or mine is None or not sft or mine >= SHORT_ANSWERS * sft:
        return None
    return (
        f"{candidate}'s answers average {mine:.2f} words, SFT's {sft:.2f}: a policy that "
        "learned to say little can win a judge's comparisons; read its answers (`instructflow "
        "eval export`) before promoting it"
    )
