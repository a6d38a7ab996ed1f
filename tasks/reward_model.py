"""Reward-model stage: the SFT network with a scalar head, trained on K-wise rankings.

All C(K,2) pairs of one prompt form one batch element (instructflow.models.ranking_loss),
so a prompt's comparisons never overfit by being seen as separate examples.
After training, a bias makes labelers' demonstrations score mean 0.
"""

import math
import shutil
from pathlib import Path

import torch
from prefect import task
from torch.nn.parallel import DistributedDataParallel

from instructflow.models.checkpoints import after_step
from instructflow.models.distributed import Group, main_process
from instructflow.models.lm import context_length
from instructflow.models.lm_training import (
    OptimConfig,
    _optimizer,
    guarded_step,
    loop_state,
    restore_loop,
)
from instructflow.models.lora import add_lora, merge_saved_adapter, trainable_fraction
from instructflow.models.ranking_loss import bias_to_center, kwise_ranking_loss, pairwise_accuracy
from instructflow.models.reward_model import (
    encode_for_reward,
    reward_model_from_causal_lm,
    rewards,
    set_reward_offset,
)
from instructflow.models.runtime import (
    PeakMemory,
    compiled_trunk,
    enable_gradient_checkpointing,
    make_accelerator,
)
from instructflow.tasks import checkpoints, comparisons, launch, tracking
from instructflow.tasks.concurrency import takes_training_slot
from instructflow.tasks.reward_model_config import RewardModelConfig
from instructflow.tasks.stage import import_closure_digest, prefect_options
from instructflow.tasks.tables import read_jsonl
from instructflow.tasks.tracked import ADAPTER, StageResult, tracked_stage
from instructflow.world import layout

# Metric-name prefix of the per-family accuracy against gold (held-out prompts).
BY_FAMILY_PREFIX = "rm/accuracy_vs_gold/"


@torch.no_grad()
def score_rows(
    model, tokenizer, rows: list[dict], max_len: int, batch_size: int = 64
) -> torch.Tensor:
    """Rewards [N, K_max] for comparison rows on the CPU (slots past a row's own K are padding)."""
    model.eval()
    width = max((len(row["responses"]) for row in rows), default=0)
    out = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        out.append(_forward(model, tokenizer, batch, max_len, width).cpu())
    return torch.cat(out) if out else torch.empty(0, 0)


def ranking_tensor(rows: list[dict], device=None) -> torch.Tensor:
    """Rankings [N, K_max], best first; a row with fewer responses is padded with -1 (instructflow.models.ranking_loss)."""
    width = max(len(row["ranking"]) for row in rows)
    padded = [row["ranking"] + [-1] * (width - len(row["ranking"])) for row in rows]
    return torch.tensor(padded, device=device)


def _forward(
    model, tokenizer, rows: list[dict], max_len: int, width: int | None = None
) -> torch.Tensor:
    """Rewards [B, width] of each row's responses. A dataset may mix K: a row with fewer
    responses is padded with empty ones, which the ranking loss and accuracy ignore."""
    k = width or max(len(row["responses"]) for row in rows)
    prompts = [row["prompt"] for row in rows for _ in range(k)]
    responses = [r for row in rows for r in row["responses"] + [""] * (k - len(row["responses"]))]
    ids, mask = encode_for_reward(tokenizer, prompts, responses, max_len)
    ids, mask = ids.to(model.device), mask.to(model.device)
    if isinstance(model, DistributedDataParallel):
        # DDP all-reduces gradients only through its own forward: the head's, which
        # reads the last non-pad token, the EOS (the pad is distinct; the offset is 0
        # while training).
        return model(input_ids=ids, attention_mask=mask).logits.view(len(rows), k)
    return rewards(model, ids, mask).view(len(rows), k)


def accuracy_vs_scores(
    predicted: torch.Tensor, scores: torch.Tensor, min_gap: float = 0.0
) -> float:
    """Share of pairs whose reference scores differ (by more than `min_gap`) that `predicted` orders the same way."""
    diff_pred = predicted.unsqueeze(-1) - predicted.unsqueeze(-2)
    diff_ref = scores.unsqueeze(-1) - scores.unsqueeze(-2)
    pairs = diff_ref > min_gap
    # float64: a share of pairs, exact as a fraction (as pairwise_accuracy counts it)
    return float((diff_pred[pairs] > 0).double().mean()) if pairs.any() else float("nan")


def accuracy_vs_scores_by_family(
    predicted: torch.Tensor, scores: torch.Tensor, families: list[str]
) -> dict[str, float]:
    """`accuracy_vs_scores` within each task family (one family per row), sorted by name.

    One overall figure hides where a reward model cannot judge: on tiny it
    orders refusals and padding almost perfectly and right against wrong
    arithmetic barely better than chance, and PPO can only climb where it judges.
    """
    rows_of: dict[str, list[int]] = {}
    for row, family in enumerate(families):
        rows_of.setdefault(family, []).append(row)
    by_family = {
        family: accuracy_vs_scores(predicted[rows], scores[rows])
        for family, rows in sorted(rows_of.items())
    }
    # A family whose responses all scored alike has no pair to judge (smoke's
    # untrained policies): it is left out rather than reported as NaN.
    return {family: acc for family, acc in by_family.items() if not math.isnan(acc)}


def train_reward_model(
    sft_dir: Path,
    comparisons_dir: Path,
    profile_dir: Path,
    cfg: RewardModelConfig,
    seed: int,
    out_dir: Path,
    log,
    log_every: int = 25,
    selected_on: str = "valid",
    announce: bool = True,
) -> dict:
    """Train the reward model; the epoch kept is the one most accurate on valid.jsonl.

    `selected_on` names those rankings in the per-epoch metrics
    (`<selected_on>_loss`, `<selected_on>_accuracy`): the held-out judge has
    none to spare and passes its own training rankings as valid.jsonl, so it
    logs them as what they are, not as validation figures. `announce`: say what it
    trains on (the held-out judge says so itself, as a judge).
    """
    memory = PeakMemory().start()
    model, tokenizer = reward_model_from_causal_lm(sft_dir, seed=seed)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    # With LoRA the trunk is frozen: adapters and the new score head train (peft's SEQ_CLS).
    adapters = add_lora(model, cfg.lora, "reward", seed) if cfg.lora else None
    fraction = trainable_fraction(model)
    max_len = context_length(model)
    train = read_jsonl(comparisons_dir / comparisons.TRAIN)
    valid = read_jsonl(comparisons_dir / comparisons.VALID)
    accelerator = make_accelerator(cfg.precision)
    torch.manual_seed(seed)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    optimizer, scheduler = _optimizer(
        model, OptimConfig(lr=cfg.lr, batch_size=cfg.batch_size), steps_per_epoch * cfg.epochs
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    group = Group(accelerator)
    generator = torch.Generator().manual_seed(seed)
    step, best_acc, start_epoch, start_batch, order = 0, -1.0, 0, 0, None
    store = checkpoints.store(out_dir, cfg.checkpoint_every)
    if (saved := store.load()) is not None:
        restore_loop(saved, accelerator, model, optimizer, scheduler, generator)
        step, best_acc = saved["step"], saved["best_acc"]
        start_epoch, start_batch, order = saved["epoch"], saved["batch"], saved["order"]
    if announce:
        print(
            f"training the reward model on {len(train)} rankings of K={sorted({len(r['responses']) for r in train})}",
            flush=True,
        )
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        if epoch != start_epoch or order is None:
            order = torch.randperm(len(train), generator=generator).tolist()
        batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        first = start_batch if epoch == start_epoch else 0
        with compiled_trunk(model, cfg.torch_compile):
            for index in range(first, len(batches)):
                # Under `accelerate launch`: this process's prompts of the global batch, and
                # its share of the batch's mean loss (instructflow.models.distributed).
                mine, real = group.batch_shard(batches[index])
                batch = [train[i] for i in mine]
                ranking = ranking_tensor(batch, device=accelerator.device)
                mean = kwise_ranking_loss(_forward(model, tokenizer, batch, max_len), ranking)
                share = mean * (len(mine) if real else 0) / len(batches[index])
                loss = mean if group.size == 1 else share * group.size
                guarded_step(accelerator, model, loss, optimizer, scheduler, 1.0, step)
                if step % log_every == 0:
                    shown = {"train_loss": float(group.sum(share.detach()))}
                    log(step, shown, cfg.epochs * len(batches), "step")
                step += 1
                after_step(
                    store,
                    step,
                    lambda s=step, e=epoch, b=index + 1, o=order, a=best_acc: loop_state(
                        accelerator,
                        model,
                        optimizer,
                        scheduler,
                        generator,
                        step=s,
                        epoch=e,
                        batch=b,
                        order=o,
                        best_acc=a,
                    ),
                )
        unwrapped = accelerator.unwrap_model(model)
        predicted = score_rows(unwrapped, tokenizer, valid, max_len)
        ranking = ranking_tensor(valid)
        valid_acc = float(pairwise_accuracy(predicted, ranking))
        log(
            epoch,
            {
                f"{selected_on}_loss": float(kwise_ranking_loss(predicted, ranking)),
                f"{selected_on}_accuracy": valid_acc,
            },
            cfg.epochs,
            "epoch",
        )
        if valid_acc > best_acc:
            best_acc = valid_acc
            if not main_process():  # the same weights everywhere: rank 0 saves
                continue
            if adapters is not None:  # the adapter and trained head only, merged below
                adapters.save_pretrained(out_dir / ADAPTER)
            else:
                unwrapped.save_pretrained(out_dir / "candidate")
                tokenizer.save_pretrained(out_dir / "candidate")

    if not main_process():  # centring and held-out scoring: rank 0 alone
        return {}
    if adapters is not None:
        del model, adapters, unwrapped
        # The SFT trunk and new head as before training (same seed), plus the best adapter.
        base, _ = reward_model_from_causal_lm(sft_dir, seed=seed)
        merge_saved_adapter(base, out_dir / ADAPTER).save_pretrained(out_dir / "candidate")
        tokenizer.save_pretrained(out_dir / "candidate")
    best, tokenizer = reward_model_from_causal_lm(out_dir / "candidate")
    # Center on demonstrations: a labeler-written answer scores 0, so PPO's
    # reward reads "better or worse than a demonstration".
    demos = read_jsonl(profile_dir / layout.SFT_TRAIN)
    demo_rows = [{"prompt": d["prompt"], "responses": [d["response"]]} for d in demos]
    set_reward_offset(
        best, bias_to_center(score_rows(best, tokenizer, demo_rows, max_len).flatten())
    )
    demo_rewards = score_rows(best, tokenizer, demo_rows, max_len).flatten()
    best.save_pretrained(out_dir / "model")
    tokenizer.save_pretrained(out_dir / "model")
    # Checkpoints first: a kill between the two leaves nothing to resume (a
    # fresh start), never checkpoints that expect the candidate.
    store.clear()
    shutil.rmtree(out_dir / "candidate")

    heldout = read_jsonl(comparisons_dir / comparisons.HELDOUT)
    predicted = score_rows(best, tokenizer, heldout, max_len)
    metrics = {
        "rm/valid_accuracy": best_acc,
        "rm/accuracy_heldout_labels": float(pairwise_accuracy(predicted, ranking_tensor(heldout))),
    }
    # Gold exists on the embedded world only; a user's dataset has held-out labels alone.
    if (comparisons_dir / comparisons.HELDOUT_GOLD).exists():
        golds = torch.tensor(
            [row["golds"] for row in read_jsonl(comparisons_dir / comparisons.HELDOUT_GOLD)]
        )
        family_of = {
            p["prompt_id"]: p["family"] for p in read_jsonl(profile_dir / layout.EVAL_TEST)
        }
        by_family = accuracy_vs_scores_by_family(
            predicted, golds, [family_of[row["prompt_id"]] for row in heldout]
        )
        metrics["rm/accuracy_vs_gold"] = accuracy_vs_scores(predicted, golds)
        metrics |= {f"{BY_FAMILY_PREFIX}{family}": acc for family, acc in by_family.items()}
    return {
        **metrics,
        "rm/demo_reward_mean": float(demo_rewards.mean()),
        "rm/demo_reward_std": float(demo_rewards.std()),
        "rm/reward_offset": float(best.config.reward_offset),
        "rm/trainable_fraction": fraction,
        **{f"rm/{name}": mb for name, mb in memory.readings_mb().items()},
    }


RM_CODE = import_closure_digest("instructflow.tasks.reward_model")


@task(**prefect_options("reward-model", RM_CODE, retries=1))
@takes_training_slot
def reward_model_task(
    sft_dir: str,
    comparisons_dir: str,
    profile_dir: str,
    cfg: RewardModelConfig,
    seed: int,
    out_dir: str,
    parent_run_id: str,
    processes: int = 1,
) -> StageResult:
    """`processes` > 1 trains under `accelerate launch` (instructflow.tasks.launch)."""
    params = cfg.model_dump() | {"seed": seed}
    with tracked_stage("reward_model", out_dir, parent_run_id, params, training=True) as stage:
        metrics = launch.run(
            train_reward_model,
            {"sft_dir": Path(sft_dir), "comparisons_dir": Path(comparisons_dir)}
            | {"profile_dir": Path(profile_dir), "cfg": cfg, "seed": seed, "out_dir": stage.out},
            processes=processes,
            work_dir=stage.out,
            log=tracking.metric_logger("rm"),
            log_prefix="rm",
        )
        stage.log_model()
        return stage.done(metrics, model_dir=str(stage.out / "model"))
