"""Base-model stage: load the user's model, or pretrain a small GPT-2 on the world's corpus.

The embedded default plays GPT-3's part: a model that has read the corpus
(facts and skills in running text) but never seen an instruction.
"""

import time
from pathlib import Path

import torch
from prefect import task

from instructflow.models.distributed import main_process
from instructflow.models.lm import build_gpt2, load_causal_lm, save_model
from instructflow.models.lm_training import OptimConfig, pack_corpus, perplexity, pretrain
from instructflow.models.tokenizer import train_tokenizer
from instructflow.tasks import checkpoints, launch, tracking
from instructflow.tasks.base_model_config import BaseModelConfig
from instructflow.tasks.concurrency import takes_training_slot
from instructflow.tasks.stage import import_closure_digest, prefect_options
from instructflow.tasks.tables import read_jsonl
from instructflow.tasks.tracked import StageResult, tracked_stage
from instructflow.world import layout


def tokenizer_texts(profile_dir: Path) -> list[str]:
    """What the tokenizer learns from: the corpus plus the training users' instructions."""
    docs = [r["text"] for r in read_jsonl(profile_dir / layout.PRETRAIN_TRAIN)]
    demos = [f"{r['prompt']} {r['response']}" for r in read_jsonl(profile_dir / layout.SFT_TRAIN)]
    return docs + demos


def pretrain_blocks(tokenizer, profile_dir: Path, rel: str, block_size: int) -> torch.Tensor:
    return pack_corpus(tokenizer, [r["text"] for r in read_jsonl(profile_dir / rel)], block_size)


def build_base_model(
    profile_dir: Path, base_model: str | None, cfg: BaseModelConfig, seed: int, out_dir: Path, log
) -> dict:
    """Write the base model to out_dir/model and return its metrics."""
    model_dir = out_dir / "model"
    if base_model and not main_process():  # nothing to train: rank 0 copies it
        return {}
    if base_model:
        # Nothing here reads the pretraining text (the evaluation reports the base model's
        # perplexity on it), so editing that text does not retrain SFT and what follows.
        model, tokenizer = load_causal_lm(base_model)
        save_model(model, tokenizer, model_dir)
        return {"pretrain/params": float(model.num_parameters())}

    tokenizer = train_tokenizer(tokenizer_texts(profile_dir), cfg.vocab_size)
    model = build_gpt2(tokenizer, cfg, seed=seed)  # the config is a GPT2Size
    blocks = pretrain_blocks(tokenizer, profile_dir, layout.PRETRAIN_TRAIN, cfg.block_size)
    print(
        f"pretraining a {model.num_parameters() / 1e6:.2f}M-parameter GPT-2 on {blocks.numel()} tokens for {cfg.steps} steps",
        flush=True,
    )
    start = time.perf_counter()
    model = pretrain(
        model,
        blocks,
        cfg.steps,
        OptimConfig(lr=cfg.lr, batch_size=cfg.batch_size),
        seed,
        log,
        store=checkpoints.store(out_dir, cfg.checkpoint_every),
    )
    seconds = time.perf_counter() - start
    if not main_process():  # the same weights everywhere: rank 0 saves
        return {}
    save_model(model, tokenizer, model_dir)
    valid = pretrain_blocks(tokenizer, profile_dir, layout.PRETRAIN_VALID, cfg.block_size)
    return {
        "pretrain/valid_perplexity": perplexity(model, valid),
        "pretrain/params": float(model.num_parameters()),
        "pretrain/tokens_per_second": cfg.steps * cfg.batch_size * cfg.block_size / seconds,
        "pretrain/seconds": seconds,
    }


BASE_CODE = import_closure_digest("instructflow.tasks.base_model")


@task(**prefect_options("base-model", BASE_CODE, retries=1))
@takes_training_slot
def base_model_task(
    profile_dir: str,
    base_model: str | None,
    cfg: BaseModelConfig,
    seed: int,
    out_dir: str,
    parent_run_id: str,
    processes: int = 1,
) -> StageResult:
    """`processes` > 1 pretrains under `accelerate launch` (instructflow.tasks.launch)."""
    params = cfg.model_dump() | {"base_model": base_model or "embedded", "seed": seed}
    with tracked_stage("base_model", out_dir, parent_run_id, params, training=True) as stage:
        metrics = launch.run(
            build_base_model,
            {"profile_dir": Path(profile_dir), "base_model": base_model, "cfg": cfg}
            | {"seed": seed, "out_dir": stage.out},
            processes=processes,
            work_dir=stage.out,
            log=tracking.metric_logger("pretrain"),
            log_prefix="pretrain",
        )
        stage.log_model()
        return stage.done(metrics, model_dir=str(stage.out / "model"))
