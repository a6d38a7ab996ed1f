"""Comparisons stage: sample K responses per RM prompt from SFT; labelers rank them.

- training comparisons: RM prompts of train/valid users, ranked by the
  training labelers; a fraction ranked twice to measure agreement;
- held-out comparisons: test users' prompts ranked by the held-out labelers,
  only to evaluate the reward model.
Human comparisons (same JSONL schema) can replace the simulated training ones.
"""

from pathlib import Path

import pandas as pd
from prefect import task

from instructflow.models.lm import load_causal_lm
from instructflow.models.sampling import sample_responses
from instructflow.tasks import tracking
from instructflow.tasks.comparisons_config import ComparisonsConfig
from instructflow.tasks.concurrency import takes_training_slot, training_slot
from instructflow.tasks.stage import (
    import_closure_digest,
    prefect_options,
)
from instructflow.tasks.tables import load_table, read_jsonl, write_jsonl
from instructflow.tasks.tracked import StageResult, tracked_stage
from instructflow.world import layout
from instructflow.world.judge import GoldJudge, LabelerPool
from instructflow.world.people import pairwise_agreement

TRAIN, VALID, HELDOUT = (
    "comparisons/train.jsonl",
    "comparisons/valid.jsonl",
    "comparisons/heldout.jsonl",
)
HELDOUT_GOLD = (
    "comparisons/heldout_gold.jsonl"  # evaluation only: gold scores of the held-out responses
)


def _rank_rows(
    prompts: pd.DataFrame, samples: list[list[str]], pool: LabelerPool, overlap: float
) -> tuple[list[dict], list[tuple]]:
    """One comparison row per (prompt, labeler); returns rows and the doubly-ranked items."""
    rows, doubles = [], []
    for item, responses in zip(prompts.to_dict("records"), samples, strict=True):
        first = pool.pick()
        ranking = pool.rank(first, item["prompt_id"], responses)
        rows.append(_row(item, responses, ranking, first.labeler_id, "a"))
        if pool.rng.random() < overlap:
            second = pool.pick(exclude=first.labeler_id)
            ranking_b = pool.rank(second, item["prompt_id"], responses)
            rows.append(_row(item, responses, ranking_b, second.labeler_id, "b"))
            doubles.append((ranking, ranking_b, responses))
    return rows, doubles


def _row(
    item: dict, responses: list[str], ranking: list[int], labeler_id: str, suffix: str
) -> dict:
    return {
        "comparison_id": f"{item['prompt_id']}-{suffix}",
        "prompt_id": item["prompt_id"],
        "user_id": item["user_id"],
        "split": item["split"],
        "prompt": item["prompt"],
        "responses": responses,
        "ranking": ranking,
        "labeler_id": labeler_id,
    }


def collect(
    sft_dir: Path, profile_dir: Path, cfg: ComparisonsConfig, seed: int, out_dir: Path
) -> dict:
    model, tokenizer = load_causal_lm(sft_dir)
    judge = GoldJudge.load(profile_dir)
    metrics: dict[str, float] = {}

    def sample(prompts: pd.DataFrame, salt: int, which: str) -> list[list[str]]:
        print(f"sampling {cfg.k} responses for {len(prompts)} {which} prompts", flush=True)
        return sample_responses(
            model,
            tokenizer,
            list(prompts["prompt"]),
            cfg.k,
            cfg.max_new_tokens,
            cfg.temperature,
            cfg.batch_size,
            seed + salt,
        )

    if cfg.human_comparisons:
        human = load_table(Path(cfg.human_comparisons), "comparisons", k_range=(4, 9))
        write_jsonl(out_dir / TRAIN, human[human["split"] == "train"].to_dict("records"))
        write_jsonl(out_dir / VALID, human[human["split"] == "valid"].to_dict("records"))
    else:
        pool = LabelerPool.load(profile_dir, "train", judge, seed)
        all_doubles = []
        splits = [(layout.RM_TRAIN, TRAIN, "RM train"), (layout.RM_VALID, VALID, "RM valid")]
        for salt, (rel, out_rel, which) in enumerate(splits):
            prompts = load_table(profile_dir / rel, "prompts")
            samples = sample(prompts, salt, which)
            rows, doubles = _rank_rows(prompts, samples, pool, cfg.overlap_fraction)
            all_doubles += doubles
            write_jsonl(out_dir / out_rel, rows)
            golds = [
                judge.score(pid, r)
                for pid, rs in zip(prompts["prompt_id"], samples, strict=True)
                for r in rs
            ]
            metrics[f"comparisons/{out_rel.split('/')[1][:-6]}_sample_gold_mean"] = sum(
                golds
            ) / len(golds)
        a, b, texts = zip(*all_doubles, strict=True) if all_doubles else ([], [], [])
        metrics["comparisons/labeler_agreement"] = pairwise_agreement(list(a), list(b), list(texts))

    # Held-out users and held-out labelers: for evaluating the RM only.
    test = load_table(profile_dir / layout.EVAL_TEST, "prompts").head(cfg.heldout_prompts)
    heldout_pool = LabelerPool.load(profile_dir, "heldout", judge, seed + 7)
    samples = sample(test, 99, "held-out test")
    rows, _ = _rank_rows(test, samples, heldout_pool, overlap=0.0)
    write_jsonl(out_dir / HELDOUT, rows)
    write_jsonl(
        out_dir / HELDOUT_GOLD,
        [
            {
                "comparison_id": r["comparison_id"],
                "golds": [judge.score(r["prompt_id"], x) for x in r["responses"]],
            }
            for r in rows
        ],
    )

    for rel in (TRAIN, VALID, HELDOUT):
        frame = load_table(out_dir / rel, "comparisons")  # what we wrote obeys the schema
        metrics[f"comparisons/rows_{rel.split('/')[1][:-6]}"] = float(len(frame))
        distinct = frame["responses"].map(lambda rs: len({r.strip() for r in rs}) / len(rs))
        metrics[f"comparisons/distinct_fraction_{rel.split('/')[1][:-6]}"] = float(distinct.mean())
    return metrics


COMPARISONS_CODE = import_closure_digest("instructflow.tasks.comparisons")


@task(**prefect_options("comparisons", COMPARISONS_CODE, retries=1))
@takes_training_slot
def comparisons_task(
    sft_dir: str,
    profile_dir: str,
    cfg: ComparisonsConfig,
    seed: int,
    out_dir: str,
    parent_run_id: str,
) -> StageResult:
    params = cfg.model_dump() | {"seed": seed}
    # Not a training stage (no checkpoints: a retry samples anew), but it takes the
    # training slot: it samples thousands of responses on the same cores.
    with training_slot(), tracked_stage("comparisons", out_dir, parent_run_id, params) as stage:
        out = stage.out
        (out / "comparisons").mkdir()
        metrics = collect(Path(sft_dir), Path(profile_dir), cfg, seed, out)
        written = [
            (pd.DataFrame(read_jsonl(out / rel)), out / rel, rel) for rel in (TRAIN, VALID, HELDOUT)
        ]
        tracking.log_tables([(*table, None, "reward_model") for table in written])
        return stage.done(metrics, dir=str(out))
