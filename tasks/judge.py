"""The held-out judge: a reward model trained only on held-out preferences.

Where no gold oracle exists (a team's own data) something other than the
training reward model must judge the policies: the training RM is what PPO
climbed, so its verdict is no evidence. InstructGPT checked that its reward
model generalised to labelers it never trained on; here a second reward
model is trained on held-out preferences only (on the embedded world: the
held-out labelers' rankings of test users' samples, which the comparisons
stage writes; on a user dataset: the test split's preferences) and judges
the policies' samples against SFT's.

The judge is trained by the reward model's own function
(`instructflow.tasks.reward_model.train_reward_model`: the SFT network with a scalar
head, the K-wise loss, resumable) on a folder holding the judge's rows
only, so judge and RM differ by their data alone. It is initialised from
SFT as the RM is. Having no rankings to spare for validation, it picks its
epoch on its own training rankings; the demonstration-centring bias the RM
function adds moves no comparison.

How far to trust it is measured, never assumed: its accuracy on held-out
pairs it did not train on (the held-out preferences are split by user into
a training part and a test part), and on the embedded world its agreement
with gold beside the held-out labelers' agreement with gold.
"""

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from prefect import task

from instructflow.models.lm import context_length
from instructflow.models.ranking_loss import pairwise_accuracy
from instructflow.models.reward_model import encode_for_reward, reward_model_from_causal_lm, rewards
from instructflow.tasks import comparisons, tracking
from instructflow.tasks.concurrency import takes_training_slot
from instructflow.tasks.judge_config import JudgeConfig
from instructflow.tasks.judge_trust import KIND
from instructflow.tasks.reward_model import (
    RewardModelConfig,
    ranking_tensor,
    score_rows,
    train_reward_model,
)
from instructflow.tasks.splits import split_by_user, tested_on
from instructflow.tasks.stage import import_closure_digest, prefect_options
from instructflow.tasks.stats import prompt_mean_with_ci
from instructflow.tasks.tables import read_jsonl, write_jsonl
from instructflow.tasks.tracked import StageResult, tracked_stage

# The prompt texts the judge trained on, so its agreement with gold can be read on unseen ones.
TRAINED_PROMPTS = "trained_prompts.json"


# --- Which preferences the judge may learn from ---------------------------------


class JudgeDataError(ValueError):
    """The judge's preferences overlap the training reward model's."""


def select_judge_rows(
    heldout: list[dict], rm_rows: list[dict], distinct_labelers: bool = True
) -> list[dict]:
    """The held-out rows, refused if the training RM saw any of them.

    Overlap means: a comparison id in both, a user in both (splits are by
    user), or, when `distinct_labelers` (the embedded world's held-out pool),
    a labeler in both. On a user dataset whose test split was ranked by the
    same people, pass `distinct_labelers=False`.
    """
    checks = [("comparison_id", "comparison"), ("user_id", "user")]
    if distinct_labelers:
        checks.append(("labeler_id", "labeler"))
    for field, what in checks:
        ours = {row[field] for row in heldout if row.get(field) is not None}
        theirs = {row[field] for row in rm_rows if row.get(field) is not None}
        shared = sorted(ours & theirs)
        if shared:
            raise JudgeDataError(
                f"the held-out judge would train on data of the training reward model: "
                f"{len(shared)} {what}(s) in both, e.g. {field}={shared[0]!r}"
            )
    return list(heldout)


def split_for_judge(
    rows: list[dict], test_share: float, seed: int
) -> tuple[list[dict], list[dict]]:
    """(train, test): each user's rows in one part (each prompt's, when rows have fewer than two users).

    Groups are ordered by a seeded hash; the first ceil(share * groups) are
    the test part, and each part keeps at least one group when there are two.
    """
    by_user = split_by_user(rows)

    def group(row: dict) -> str:
        return str(row["user_id"]) if by_user else row["prompt"]

    order = sorted(
        {group(row) for row in rows},
        key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest(),
    )
    n_test = min(max(1, math.ceil(test_share * len(order))), len(order) - 1) if order else 0
    test_groups = set(order[:n_test])
    return (
        [row for row in rows if group(row) not in test_groups],
        [row for row in rows if group(row) in test_groups],
    )


def pair_count(rows: list[dict]) -> int:
    """Ranked pairs the rows hold: C(K, 2) per ranking of K."""
    return sum(len(row["ranking"]) * (len(row["ranking"]) - 1) // 2 for row in rows)


def cap_pairs(rows: list[dict], max_pairs: int | None) -> list[dict]:
    """The first rows holding at most `max_pairs` pairs, topped up to exactly that many.

    Whole rankings are kept while they fit; the rest comes from the next
    ranking as two-response rows (each pair of a ranking is a ranking of 2).
    """
    if max_pairs is None:
        return list(rows)
    kept, left = [], max_pairs
    for row in rows:
        pairs = pair_count([row])
        if pairs <= left:
            kept.append(row)
            left -= pairs
            continue
        order = row["ranking"]
        for i in range(len(order)):
            for j in range(i + 1, len(order)):
                if left == 0:
                    return kept
                winner, loser = order[i], order[j]
                kept.append(
                    row
                    | {
                        "comparison_id": f"{row.get('comparison_id', '')}-pair{winner}-{loser}",
                        "responses": [row["responses"][winner], row["responses"][loser]],
                        "ranking": [0, 1],
                    }
                )
                left -= 1
        if left == 0:
            break
    return kept


# --- Training and measuring it --------------------------------------------------


def judge_accuracy(scores: torch.Tensor, rows: list[dict]) -> float:
    """Share of the rows' ranked pairs whose winner the judge scores higher (a tie counts 0.5).

    `scores` is [N, K_max] as `score_rows` returns it; NaN when there is no pair.
    Counted in float64: a share of pairs is a fraction (7 of 15: 0.4666666666666667), and a
    float32 mean turned float reads 0.46666666865348816 in the report, the gate block and
    MLflow. The scores' order, and so every pair's credit, is the same in either precision.
    """
    if not rows or pair_count(rows) == 0:
        return float("nan")
    return float(pairwise_accuracy(scores.double(), ranking_tensor(rows)))


def train_judge(
    sft_dir: Path,
    profile_dir: Path,
    heldout: list[dict],
    rm_rows: list[dict],
    cfg: JudgeConfig,
    seed: int,
    out_dir: Path,
    log,
    golds: dict[str, list[float]] | None = None,
    distinct_labelers: bool = True,
) -> dict:
    """Train the judge on part of `heldout`, test it on the rest; save it to out_dir/model.

    `heldout` and `rm_rows` are comparison rows (prompt, responses, ranking,
    and where known comparison_id, user_id, labeler_id). `golds` maps a
    comparison id to its responses' gold scores (embedded world only).
    The training is the reward model's own (`train_reward_model`, resumable
    in out_dir), on a comparisons folder that holds the judge's rows only:
    its training part as train and valid (it has no rankings to spare, so
    its epoch is chosen on its own training rankings), its test part as
    held-out. Returns the judge's metrics, `judge/...`.
    """
    rows = select_judge_rows(heldout, rm_rows, distinct_labelers)
    train, test = split_for_judge(rows, cfg.test_share, seed)
    train = cap_pairs(train, cfg.max_train_pairs)
    if not train or not test:
        raise JudgeDataError(
            f"the held-out preferences ({len(rows)} rankings) split into {len(train)} to train "
            f"the judge and {len(test)} to test it: both parts need at least one"
        )
    print(
        f"training the held-out judge on {len(train)} rankings ({pair_count(train)} pairs); "
        f"{len(test)} rankings ({pair_count(test)} pairs) {tested_on(rows)} test it",
        flush=True,
    )
    folder = out_dir / "judge_comparisons"
    write_jsonl(folder / comparisons.TRAIN, train)
    write_jsonl(folder / comparisons.VALID, train)
    write_jsonl(folder / comparisons.HELDOUT, test)
    if golds is not None:
        write_jsonl(
            folder / comparisons.HELDOUT_GOLD,
            [
                {"comparison_id": r["comparison_id"], "golds": golds[r["comparison_id"]]}
                for r in test
            ],
        )
    training = RewardModelConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size)
    trained = train_reward_model(
        sft_dir,
        folder,
        profile_dir,
        training,
        seed,
        out_dir,
        log,
        selected_on="training_rankings",
        announce=False,
    )
    (out_dir / TRAINED_PROMPTS).write_text(json.dumps(sorted({r["prompt"] for r in train})))

    model, tokenizer = reward_model_from_causal_lm(out_dir / "model")
    scores = score_rows(model, tokenizer, test, context_length(model))
    metrics = {
        "judge/training_rows": float(len(train)),
        "judge/training_pairs": float(pair_count(train)),
        "judge/test_rows": float(len(test)),
        "judge/test_pairs": float(pair_count(test)),
        "judge/accuracy_heldout_pairs": judge_accuracy(scores, test),
    }
    if "rm/accuracy_vs_gold" in trained:
        metrics["judge/accuracy_vs_gold"] = trained["rm/accuracy_vs_gold"]
    return metrics


def train_judge_on_comparisons(
    sft_dir: Path,
    profile_dir: Path,
    comparisons_dir: Path,
    cfg: JudgeConfig,
    seed: int,
    out_dir: Path,
    log,
    distinct_labelers: bool = True,
) -> dict:
    """The judge from a comparisons folder: trained on heldout.jsonl, never on train/valid.jsonl.

    On the embedded world heldout.jsonl holds the held-out labelers' rankings
    of test users' samples (and gold scores beside them); on a user dataset,
    the test split's preferences, whose labelers may be the RM's
    (`distinct_labelers=False`).
    """
    heldout = read_jsonl(comparisons_dir / comparisons.HELDOUT)
    rm_rows = read_jsonl(comparisons_dir / comparisons.TRAIN) + read_jsonl(
        comparisons_dir / comparisons.VALID
    )
    gold_file = comparisons_dir / comparisons.HELDOUT_GOLD
    golds = (
        {row["comparison_id"]: row["golds"] for row in read_jsonl(gold_file)}
        if gold_file.exists()
        else None
    )
    return train_judge(
        sft_dir, profile_dir, heldout, rm_rows, cfg, seed, out_dir, log, golds, distinct_labelers
    )


# --- The API the evaluation and the gate call ----------------------------------


class HeldOutJudge:
    """A trained judge: scores (prompt, text) pairs and compares two texts for a prompt."""

    def __init__(self, model, tokenizer, trained_prompts: Sequence[str] = ()):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_len = context_length(model)
        self.trained_prompts = frozenset(trained_prompts)

    @classmethod
    def load(cls, judge_dir: str | Path) -> "HeldOutJudge":
        """From the judge stage's output folder (its `model/` and the prompts it trained on)."""
        folder = Path(judge_dir)
        model, tokenizer = reward_model_from_causal_lm(folder / "model")
        listed = folder / TRAINED_PROMPTS
        trained = json.loads(listed.read_text()) if listed.exists() else []
        return cls(model, tokenizer, trained)

    @torch.no_grad()
    def score(
        self, prompts: Sequence[str], texts: Sequence[str], batch_size: int = 128
    ) -> list[float]:
        """The judge's reward for each (prompt, text)."""
        out: list[float] = []
        for start in range(0, len(prompts), batch_size):
            ids, mask = encode_for_reward(
                self.tokenizer,
                prompts[start : start + batch_size],
                texts[start : start + batch_size],
                self.max_len,
                cut_responses=True,  # samples: re-encoded, they may outgrow the context
            )
            out += rewards(
                self.model, ids.to(self.model.device), mask.to(self.model.device)
            ).tolist()
        return out

    def compare_many(
        self, prompts: Sequence[str], firsts: Sequence[str], seconds: Sequence[str]
    ) -> list[float]:
        """Per prompt: 1.0 if the judge prefers `first`, 0.0 if `second`, 0.5 for a tie or identical texts."""
        a, b = self.score(prompts, firsts), self.score(prompts, seconds)
        return [
            0.5 if x.strip() == y.strip() or sa == sb else float(sa > sb)
            for x, y, sa, sb in zip(firsts, seconds, a, b, strict=True)
        ]

    def compare(self, prompt: str, first: str, second: str) -> float:
        return self.compare_many([prompt], [first], [second])[0]

    def win_rate(
        self,
        prompts: Sequence[str],
        texts: Sequence[str],
        reference: Sequence[str],
        samples_per_prompt: int,
        seed: int = 0,
    ) -> dict:
        """{"mean", "ci95"}: how often the judge prefers `texts` to `reference` (CI resamples prompts).

        `prompts` holds each prompt `samples_per_prompt` times in a row, as the evaluation samples.
        """
        verdicts = self.compare_many(prompts, texts, reference)
        return prompt_mean_with_ci(verdicts, samples_per_prompt, seed)


# --- Prefect wrapper ------------------------------------------------------------

JUDGE_CODE = import_closure_digest("instructflow.tasks.judge")


@task(**prefect_options("judge", JUDGE_CODE, retries=1))
@takes_training_slot
def judge_task(
    sft_dir: str,
    comparisons_dir: str,
    profile_dir: str,
    cfg: JudgeConfig,
    seed: int,
    out_dir: str,
    parent_run_id: str,
    distinct_labelers: bool = True,
) -> StageResult:
    """Train the held-out judge on the comparisons stage's held-out rankings (`judge_dir/model` is a reward-model checkpoint)."""
    params = cfg.model_dump() | {"seed": seed, "kind": KIND}
    # training: an interrupted judge resumes its training
    with tracked_stage("judge", out_dir, parent_run_id, params, training=True) as stage:
        metrics = train_judge_on_comparisons(
            Path(sft_dir),
            Path(profile_dir),
            Path(comparisons_dir),
            cfg,
            seed,
            stage.out,
            tracking.metric_logger("judge"),
            distinct_labelers,
        )
        stage.log_model()
        return stage.done(metrics, dir=str(stage.out))
