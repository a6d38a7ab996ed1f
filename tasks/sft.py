"""SFT stage: fine-tune the base model on labelers' demonstrations.

Loss on response tokens only; several epochs; the checkpoint with the best
validation loss (validation users' demonstrations) is kept. The same
function trains the FLAN- and T0-style baselines on their mixtures.
"""

from pathlib import Path

from prefect import task

from instructflow.models.batching import encode_pair
from instructflow.models.distributed import main_process
from instructflow.models.lm import context_length, load_causal_lm, save_model
from instructflow.models.lm_training import OptimConfig, encode_demonstrations, supervised_finetune
from instructflow.models.lora import add_lora, merge_saved_adapter, trainable_fraction
from instructflow.models.runtime import PeakMemory, enable_gradient_checkpointing
from instructflow.tasks import checkpoints, launch, tracking
from instructflow.tasks.concurrency import takes_training_slot
from instructflow.tasks.sft_config import SFTConfig
from instructflow.tasks.stage import import_closure_digest, prefect_options
from instructflow.tasks.tables import load_table
from instructflow.tasks.tracked import ADAPTER, StageResult, tracked_stage
from instructflow.world import layout


def load_pairs(path: Path, kind: str, tokenizer, max_len: int):
    """A demonstrations/mixture table, validated, with a length check against the model's context."""

    def count_tokens(row: dict) -> int:
        return len(encode_pair(tokenizer, row["prompt"], row["response"], max_len=10**9)[0])

    return load_table(path, kind, max_tokens=max_len, count_tokens=count_tokens)


def finetune(
    model_dir: Path,
    train_path: Path,
    valid_path: Path | None,
    kind: str,
    cfg: SFTConfig,
    seed: int,
    out_dir: Path,
    log,
    log_every: int = 25,
) -> dict:
    """Fine-tune the model in model_dir on (prompt, response) pairs; keep the best epoch in out_dir/model.

    With `cfg.lora` only adapters train; the best epoch's adapter is kept in
    out_dir/adapter and merged into the base weights for out_dir/model.
    """
    memory = PeakMemory().start()
    model, tokenizer = load_causal_lm(model_dir)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    adapters = add_lora(model, cfg.lora, "causal_lm", seed) if cfg.lora else None
    max_len = context_length(model)
    train = load_pairs(train_path, kind, tokenizer, max_len)
    train_ex = encode_demonstrations(tokenizer, train["prompt"], train["response"], max_len)
    if valid_path is not None:
        valid = load_pairs(valid_path, kind, tokenizer, max_len)
        valid_ex = encode_demonstrations(tokenizer, valid["prompt"], valid["response"], max_len)
    else:
        # A mixture has no users: hold out every 10th example for checkpoint choice.
        valid_ex, train_ex = train_ex[::10], [ex for i, ex in enumerate(train_ex) if i % 10]
    best = {"valid_loss": float("inf"), "epoch": -1}
    # Without validation demonstrations (a dataset whose demonstrations are all in train)
    # every epoch's validation loss is 0, and keeping the lowest kept the first epoch of
    # many, silently (own-data trial): keep the last epoch instead, and say so.
    blind = not valid_ex

    def on_epoch(epoch: int, valid_loss: float, trained) -> None:
        # No validation rows: the loop's 0 is no loss, so the epoch logs progress only.
        log(epoch, {} if blind else {"valid_loss": valid_loss}, cfg.epochs, "epoch")
        if blind or valid_loss < best["valid_loss"]:
            best.update(valid_loss=float("nan") if blind else valid_loss, epoch=epoch)
            if not main_process():  # every process holds the same weights; rank 0 saves
                return
            if adapters is not None:
                adapters.save_pretrained(out_dir / ADAPTER)  # a few MB: adapters only
            else:
                save_model(trained, tokenizer, out_dir / "model")

    held = (
        "none for validation: the last epoch is kept"
        if blind
        else f"{len(valid_ex)} for validation"
    )
    print(f"fine-tuning on {len(train_ex)} examples ({held}), {cfg.epochs} epochs", flush=True)
    supervised_finetune(
        model,
        train_ex,
        valid_ex,
        cfg.epochs,
        OptimConfig(lr=cfg.lr, batch_size=cfg.batch_size),
        tokenizer.pad_token_id,
        seed,
        log,
        on_epoch,
        store=checkpoints.store(out_dir, cfg.checkpoint_every),
        carry=best,
        precision=cfg.precision,
        log_every=log_every,
        torch_compile=cfg.torch_compile,
    )
    fraction = trainable_fraction(model)
    if not main_process():
        return {}
    if adapters is not None:
        # A plain Hugging Face checkpoint: the untouched base plus the best adapter, merged.
        del model, adapters
        base, _ = load_causal_lm(model_dir)
        save_model(merge_saved_adapter(base, out_dir / ADAPTER), tokenizer, out_dir / "model")
    return {
        "best_valid_loss": best["valid_loss"],
        "best_epoch": float(best["epoch"]),
        "train_examples": float(len(train_ex)),
        "trainable_fraction": fraction,
        **memory.readings_mb(),  # peak_memory_mb, process_peak_memory_mb
    }


SFT_CODE = import_closure_digest("instructflow.tasks.sft")


@task(**prefect_options("sft", SFT_CODE, retries=1))
@takes_training_slot
def sft_task(
    variant: str,
    model_dir: str,
    profile_dir: str,
    cfg: SFTConfig,
    seed: int,
    out_dir: str,
    parent_run_id: str,
    processes: int = 1,
) -> StageResult:
    """`variant` is sft (demonstrations), flan or t0 (the baselines' instruction mixtures).

    `processes` > 1 trains under `accelerate launch` (instructflow.tasks.launch).
    """
    profile = Path(profile_dir)
    if variant == "sft":
        train, valid, kind = (
            profile / layout.SFT_TRAIN,
            profile / layout.SFT_VALID,
            "demonstrations",
        )
    else:
        train, valid, kind = (
            profile / (layout.FLAN_MIXTURE if variant == "flan" else layout.T0_MIXTURE),
            None,
            "mixture",
        )
    params = cfg.model_dump() | {"seed": seed, "train_table": str(train)}
    with tracked_stage(variant, out_dir, parent_run_id, params, training=True) as stage:
        metrics = launch.run(
            finetune,
            {"model_dir": Path(model_dir), "train_path": train, "valid_path": valid, "kind": kind}
            | {"cfg": cfg, "seed": seed, "out_dir": stage.out},
            processes=processes,
            work_dir=stage.out,
            log=tracking.metric_logger(variant),
            log_prefix=variant,
        )
        metrics = {f"{variant}/{k}": v for k, v in metrics.items()}
        stage.log_model()
        return stage.done(metrics, model_dir=str(stage.out / "model"))
