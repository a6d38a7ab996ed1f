"""How far the held-out judge can be trusted: pure functions, no torch.

- `judge_is_trustworthy`: the rule a gate applies before promoting on the
  judge's verdicts (its accuracy on held-out pairs it did not train on);
- on the embedded world, the judge's agreement with gold beside the held-out
  labelers' agreement with gold, on the same pairs (a policy sample against
  its SFT reference);
- the report's top-level `judge` block, and `untrusted_caption`, the same verdict
  short enough for the judge's win-rate plot.
"""

import math
from collections.abc import Sequence

KIND = "reward_model_on_heldout_preferences"
# The gate's default floor: below it a judge is too weak to promote on (issue 18).
ACCURACY_FLOOR = 0.6
# How much below the held-out labelers' agreement with gold the judge's may fall.
AGREEMENT_MARGIN = 0.10


def wilson_lower(share: float, n: int, z: float = 1.96) -> float:
    """Lower end of the Wilson score interval (95% at z = 1.96) of a proportion over n trials."""
    if n <= 0:
        return 0.0
    spread = z * z / n
    centre = share + spread / 2
    half = z * math.sqrt(share * (1 - share) / n + spread / (4 * n))
    return (centre - half) / (1 + spread)


def wilson_upper(share: float, n: int, z: float = 1.96) -> float:
    """Upper end of the Wilson score interval: the lower end of the failures' share, mirrored."""
    return 1.0 - wilson_lower(1.0 - share, n, z)


def pairs_to_beat_chance(accuracy: float, z: float = 1.96) -> int | None:
    """Fewest held-out pairs on which a judge of this accuracy has its Wilson 95% interval
    wholly above 0.5 (the rule of judge_is_trustworthy); None at or below chance, where no
    number of pairs will do.

    The Wilson interval holds the shares p0 with |p - p0| <= z * sqrt(p0 (1 - p0) / n), so
    its lower end passes 0.5 exactly when p - 0.5 > z * sqrt(0.25 / n) (the normal
    approximation of the binomial at chance): n > (z / (2 (p - 0.5)))^2.
    """
    if accuracy is None or not accuracy > 0.5:
        return None
    return math.floor((z / (2 * (accuracy - 0.5))) ** 2) + 1


def _pairs_needed(accuracy: float, pairs: int, at: str) -> str:
    """How many held-out pairs tell a judge of `accuracy` (`at`: how to name it) from chance."""
    needed = pairs_to_beat_chance(accuracy)
    if needed is None:
        return f"a judge at {at} is told from chance on no number of held-out pairs"
    return f"a judge at {at} is told from chance on at least {needed} held-out pairs, there were {pairs}"


def _assess(accuracy: float, pairs: int, floor: float) -> tuple[bool, str, str]:
    """(ok, reason, caption): the one verdict on a judge, in the report's words and in a
    caption short enough for a plot (the judgement itself is made only here)."""
    if accuracy is None or math.isnan(accuracy) or pairs <= 0:
        reason = "held-out judge untested: no held-out pairs were left to measure it on"
        return False, reason, "judge untested: no held-out pairs to measure it on"
    lower, upper = wilson_lower(accuracy, pairs), wilson_upper(accuracy, pairs)
    on = f"accuracy {accuracy:.3f} on {pairs} held-out pairs"
    interval = f"95% CI {lower:.3f}-{upper:.3f}"
    measured = f"accuracy {accuracy:.3f} [{interval}] on {pairs} held-out pairs"
    if upper < 0.5:  # not merely weak: it orders pairs against the preferences it is tested on
        return (
            False,
            # "; " between facts: the model card makes each clause a sentence (one colon each)
            f"held-out judge worse than chance: {on} ({interval} < 0.5); it prefers the "
            "rejected answer more often than chance would; a judge trained on few pairs keeps "
            "its starting model's leanings (longer answers, say), or the test split's "
            "preferences differ from the ones it trained on",
            f"judge untrusted: {measured}, worse than chance",
        )
    if accuracy < floor:
        return (
            False,
            f"held-out judge too weak: {on} ({interval}) < floor {floor:.2f}; "
            + _pairs_needed(floor, pairs, f"the floor ({floor:.2f})"),
            f"judge untrusted: {measured}, below floor {floor:.2f}",
        )
    if lower <= 0.5:
        return (
            False,
            f"held-out judge not shown better than chance: {on}, "
            f"95% CI lower end {lower:.3f} <= 0.5 (too few pairs: "
            f"{_pairs_needed(accuracy, pairs, f'{accuracy:.3f}')})",
            f"judge untrusted: {measured}, not shown better than chance (floor {floor:.2f})",
        )
    reason = f"held-out judge {on} >= floor {floor:.2f} (95% CI lower end {lower:.3f})"
    return True, reason, ""


def judge_is_trustworthy(
    accuracy: float, pairs: int, floor: float = ACCURACY_FLOOR
) -> tuple[bool, str]:
    """May a gate promote on this judge's verdicts? (ok, one-line reason).

    Its accuracy on held-out pairs must reach `floor` and be better than chance beyond
    doubt: on few pairs a lucky judge passes the floor (5 of 8 is 0.625), so the lower
    end of the accuracy's 95% interval must be above 0.5 too. A refusal says what was
    measured (accuracy, its interval, on how many pairs) and how many pairs would do.
    """
    ok, reason, _ = _assess(accuracy, pairs, floor)
    return ok, reason


def untrusted_caption(metrics: dict[str, float], floor: float = ACCURACY_FLOOR) -> str | None:
    """What a plot of the judge's win rates must say when the gate would not act on them
    (None when it would), from the judge stage's metrics: someone who opens only the plot in
    MLflow should not read an untrusted judge's bars as evidence."""
    ok, _, caption = _assess(*_measured(metrics), floor)
    return None if ok else caption


def _measured(metrics: dict[str, float]) -> tuple[float, int]:
    """(accuracy on held-out pairs, number of them) from the judge stage's metrics."""
    accuracy = metrics.get("judge/accuracy_heldout_pairs", float("nan"))
    return accuracy, int(metrics["judge/test_pairs"])


# --- Agreement with gold (embedded world) ----------------------------------------


def gold_agreement(
    verdicts: Sequence[float], gold_first: Sequence[float], gold_second: Sequence[float]
) -> tuple[float, int]:
    """(share of pairs where the verdict prefers the sample gold prefers, number of such pairs).

    Only pairs gold orders strictly count; a verdict of 0.5 (a tie) earns half.
    """
    credit, pairs = 0.0, 0
    for verdict, g1, g2 in zip(verdicts, gold_first, gold_second, strict=True):
        if g1 == g2:
            continue
        pairs += 1
        credit += verdict if g1 > g2 else 1.0 - verdict
    return (credit / pairs if pairs else float("nan")), pairs


def agreement_block(raw: dict[str, list[dict]], trained_prompts: frozenset[str]) -> dict:
    """Judge and held-out labelers against gold, on every policy sample vs its SFT reference.

    `raw` maps a policy to the evaluation's items (`prompt`, `gold`,
    `reference_gold`, `labeler_verdict`, `judge_verdict`). Pooled over all
    policies, per policy, and on prompts the judge never trained on.
    """

    def measure(items: list[dict]) -> dict:
        first = [it["gold"] for it in items]
        second = [it["reference_gold"] for it in items]
        judge, pairs = gold_agreement([it["judge_verdict"] for it in items], first, second)
        labelers, _ = gold_agreement([it["labeler_verdict"] for it in items], first, second)
        return {"judge": judge, "heldout_labelers": labelers, "pairs": pairs}

    everything = [it for items in raw.values() for it in items]
    block = measure(everything)
    block["unseen_prompts"] = measure(
        [it for it in everything if it["prompt"] not in trained_prompts]
    )
    block["by_policy"] = {name: measure(items) for name, items in raw.items()}
    return block


def agreement_metrics(block: dict) -> dict[str, float]:
    """MLflow metrics of an agreement block (eval/judge/...)."""
    out = {}
    for scope, figures in (("", block), ("unseen_prompts/", block["unseen_prompts"])):
        out[f"eval/judge/{scope}gold_agreement"] = figures["judge"]
        out[f"eval/judge/{scope}labelers_gold_agreement"] = figures["heldout_labelers"]
        out[f"eval/judge/{scope}gold_pairs"] = float(figures["pairs"])
    return out


def report_block(metrics: dict[str, float], agreement: dict | None, *, floor: float) -> dict:
    """The report's top-level `judge` block from the judge stage's metrics and the agreement;
    `floor`: the run's gate.judge_accuracy_floor. No default: a report that judged the judge
    at another floor than the one the run was given would contradict its own settings."""
    accuracy, pairs = _measured(metrics)
    trustworthy, reason = judge_is_trustworthy(accuracy, pairs, floor)
    block = {
        "kind": KIND,
        "training_rows": int(metrics["judge/training_rows"]),
        "training_pairs": int(metrics["judge/training_pairs"]),
        "test_pairs": pairs,
        "accuracy_heldout_pairs": accuracy,
        "trustworthy": trustworthy,
        "trust_reason": reason,
    }
    if "judge/accuracy_vs_gold" in metrics:
        block["accuracy_vs_gold"] = metrics["judge/accuracy_vs_gold"]
    if agreement is not None:
        block["agreement_with_gold"] = agreement
        # Issue 18's bar: the judge agrees with gold at most 0.10 less often than the labelers.
        block["agreement_within_margin"] = bool(
            agreement["judge"] >= agreement["heldout_labelers"] - AGREEMENT_MARGIN
        )
    return block


def parent_metrics(block: dict) -> dict[str, float]:
    """The `judge` block's figures for the pipeline's parent MLflow run (judge/...)."""
    out = {
        "judge/accuracy_heldout_pairs": block["accuracy_heldout_pairs"],
        "judge/training_pairs": float(block["training_pairs"]),
        "judge/trustworthy": float(block["trustworthy"]),
    }
    if "agreement_with_gold" in block:
        out |= agreement_metrics(block["agreement_with_gold"])
    return out
