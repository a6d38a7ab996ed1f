"""Language-model training loops: pretraining on packed text and SFT on response tokens.

Plain torch under Hugging Face Accelerate: on this machine one CPU process,
elsewhere DDP/FSDP/DeepSpeed by `accelerate launch` configuration, with the
same code. Progress and metrics go to an `on_log` callback so the caller
(the Prefect task) decides where they are recorded.
"""

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from instructflow.models.batching import (
    IGNORE_INDEX,
    collate_sft,
    encode_pair,
    length_bucketed_batches,
)
from instructflow.models.checkpoints import CheckpointStore, after_step, rng_state, set_rng_state
from instructflow.models.distributed import Group, labelled_tokens
from instructflow.models.lm import no_cache, takes_logits_to_keep
from instructflow.models.numeric import check_finite
from instructflow.models.runtime import (
    Precision,
    adamw,
    compiled_trunk,
    ddp_accelerator,
    make_accelerator,
)

# on_log(step, metrics, total, unit): metrics after `unit` `step` (0-based) of `total`.
LogFn = Callable[[int, dict[str, float], int, str], None]


@dataclass(frozen=True)
class OptimConfig:
    lr: float
    batch_size: int
    weight_decay: float = 0.01
    warmup_steps: int = 20
    grad_clip: float = 1.0


def _optimizer(model: torch.nn.Module, cfg: OptimConfig, total_steps: int):
    # Only what trains: with LoRA adapters the frozen weights get no optimizer state.
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = adamw(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))

    def schedule(step: int) -> float:
        # Linear warm-up, then cosine decay to 10% of the peak rate.
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def loop_state(accelerator: Accelerator, model, optimizer, scheduler, generator=None, **position):
    """Everything a resumed loop needs to continue exactly: weights, optimizer, schedule, RNGs, position."""
    return {
        "model": accelerator.unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(generator),
        **position,
    }


def restore_loop(
    saved: dict, accelerator: Accelerator, model, optimizer, scheduler, generator=None
):
    """Put a `loop_state` back (saying so: the log shows a resumed stage); returns it."""
    if accelerator.is_main_process:
        print(f"resuming from the checkpoint at step {saved['step']}", flush=True)
    accelerator.unwrap_model(model).load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    set_rng_state(saved["rng"], generator)
    return saved


def guarded_step(
    accelerator: Accelerator, model, loss, optimizer, scheduler, clip: float, step: int
):
    """backward, clip, optimizer and schedule step; a non-finite loss or gradient stops before the update."""
    check_finite("loss", step, loss)
    accelerator.backward(loss)
    norm = accelerator.clip_grad_norm_(model.parameters(), clip)
    check_finite("gradient norm", step, norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def pack_corpus(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], block_size: int
) -> torch.Tensor:
    """Documents joined by EOS and cut into [N, block_size] blocks: no padding at all."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(" " + text, add_special_tokens=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    n_blocks = len(ids) // block_size
    return torch.tensor(ids[: n_blocks * block_size], dtype=torch.long).view(n_blocks, block_size)


def pretrain(
    model: PreTrainedModel,
    blocks: torch.Tensor,
    steps: int,
    cfg: OptimConfig,
    seed: int,
    on_log: LogFn,
    log_every: int = 25,
    store: CheckpointStore | None = None,
) -> PreTrainedModel:
    """Next-token training on packed blocks for a fixed number of steps (resumed from `store` if it holds a checkpoint).

    Under `accelerate launch` each process trains on its shard of every
    step's rows; every block has the same length, so its share of the mean
    loss is its rows' mean times its fraction of the rows.
    """
    accelerator = ddp_accelerator()
    group = Group(accelerator)
    torch.manual_seed(seed)
    optimizer, scheduler = _optimizer(model, cfg, steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    generator = torch.Generator().manual_seed(seed)
    start = 0
    if store is not None and (saved := store.load()) is not None:
        start = restore_loop(saved, accelerator, model, optimizer, scheduler, generator)["step"]
    for step in range(start, steps):
        rows = torch.randint(0, blocks.shape[0], (cfg.batch_size,), generator=generator)
        mine, real = group.batch_shard(rows.tolist()) if group.size > 1 else (rows, True)
        batch = blocks[mine].to(accelerator.device)
        loss = shown = model(input_ids=batch, labels=batch, **no_cache(model)).loss
        if group.size > 1:
            shown = loss * (len(mine) if real else 0) / len(rows)
            loss = shown * group.size  # DDP averages the processes' gradients
        guarded_step(accelerator, model, loss, optimizer, scheduler, cfg.grad_clip, step)
        if step % log_every == 0 or step == steps - 1:
            shown = float(group.sum(shown.detach()))  # every process takes part
            on_log(step, {"loss": shown, "lr": scheduler.get_last_lr()[0]}, steps, "step")
        after_step(
            store,
            step + 1,
            lambda s=step + 1: loop_state(
                accelerator, model, optimizer, scheduler, generator, step=s
            ),
        )
    model.eval()
    return accelerator.unwrap_model(model)


@torch.no_grad()
def perplexity(model: PreTrainedModel, blocks: torch.Tensor, batch_size: int = 32) -> float:
    """exp of the mean next-token loss over packed blocks; NaN for no blocks (text too short
    to fill one), where exp(0 / 1) read as a perfect 1.0."""
    if blocks.shape[0] == 0:
        return float("nan")
    model.eval()
    total, count = 0.0, 0
    for start in range(0, blocks.shape[0], batch_size):
        batch = blocks[start : start + batch_size].to(model.device)
        loss = model(input_ids=batch, labels=batch, **no_cache(model)).loss
        n = batch.numel() - batch.shape[0]
        total += loss.item() * n
        count += n
    return math.exp(total / max(1, count))


def encode_demonstrations(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    responses: Sequence[str],
    max_len: int,
) -> list[tuple[list[int], list[int]]]:
    return [encode_pair(tokenizer, p, r, max_len) for p, r in zip(prompts, responses, strict=True)]


def sft_loss_sum(
    model: PreTrainedModel, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over the batch's labelled tokens, and how many there are.

    Hugging Face's causal-LM loss (logits at t predict labels at t+1, -100
    ignored, fp32) as a sum, so that shards of one batch add up. The output
    layer runs only from the first position that predicts a label on, where
    the model takes `logits_to_keep`: in SFT data most tokens are prompt, and
    logits there would be computed only to be ignored.
    """
    labels = batch["labels"]
    predicts_label = (labels[:, 1:] != IGNORE_INDEX).any(0)
    first = int(predicts_label.long().argmax())  # 0 when nothing is labelled: the loss is 0
    keep = torch.arange(first, labels.shape[1] - 1, device=labels.device)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    inputs |= no_cache(model)
    if takes_logits_to_keep(model):
        logits = model(**inputs, logits_to_keep=keep).logits
    else:
        logits = model(**inputs).logits[:, keep]
    targets = labels[:, first + 1 :]
    total = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return total, int((targets != IGNORE_INDEX).sum())


@torch.no_grad()
def response_loss(
    model: PreTrainedModel,
    examples: list[tuple[list[int], list[int]]],
    pad_id: int,
    batch_size: int = 64,
) -> float:
    """Mean loss on response tokens (the SFT objective) over `examples`."""
    model.eval()
    total, count = 0.0, 0
    lengths = [len(ids) for ids, _ in examples]
    for batch_idx in length_bucketed_batches(lengths, batch_size, seed=0):
        batch = {
            k: v.to(model.device)
            for k, v in collate_sft([examples[i] for i in batch_idx], pad_id).items()
        }
        loss_sum, n = sft_loss_sum(model, batch)
        total += loss_sum.item()
        count += n
    return total / max(1, count)


def supervised_finetune(
    model: PreTrainedModel,
    train: list[tuple[list[int], list[int]]],
    valid: list[tuple[list[int], list[int]]],
    epochs: int,
    cfg: OptimConfig,
    pad_id: int,
    seed: int,
    on_log: LogFn,
    on_epoch: Callable[[int, float, PreTrainedModel], None],
    store: CheckpointStore | None = None,
    carry: dict | None = None,
    precision: Precision = "fp32",
    log_every: int = 25,
    torch_compile: bool = False,
) -> None:
    """Fine-tune on response tokens only, several epochs; `on_epoch(epoch, valid_loss, model)` after each.

    The caller keeps the best checkpoint by validation loss (InstructGPT
    trains 16 epochs and selects on validation data). With a `store` the loop
    checkpoints every `store.every` steps, with the caller's `carry` dict (its
    record of the best epoch), and resumes from the newest checkpoint there:
    `carry` is then updated in place. `precision` is the autocast precision
    (instructflow.models.runtime.make_accelerator); `torch_compile` runs the
    training steps through a compiled trunk (runtime.compiled_trunk).

    Under `accelerate launch` with N processes, every process walks the same
    global batches and trains on its shard of each (instructflow.models.distributed):
    the loss is the mean over the global batch's response tokens, as with one
    process. Callbacks run in every process; the caller saves from rank 0 only.
    """
    accelerator = make_accelerator(precision)
    group = Group(accelerator)
    torch.manual_seed(seed)
    lengths = [len(ids) for ids, _ in train]
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    optimizer, scheduler = _optimizer(model, cfg, steps_per_epoch * epochs)
    model, optimizer = accelerator.prepare(model, optimizer)
    step, start_epoch, start_batch = 0, 0, 0
    if store is not None and (saved := store.load()) is not None:
        restore_loop(saved, accelerator, model, optimizer, scheduler)
        step, start_epoch, start_batch = saved["step"], saved["epoch"], saved["batch"]
        if carry is not None:
            carry.update(saved["carry"])
    for epoch in range(start_epoch, epochs):
        model.train()
        batches = length_bucketed_batches(lengths, cfg.batch_size, seed=seed * 1000 + epoch)
        first = start_batch if epoch == start_epoch else 0
        with compiled_trunk(model, torch_compile):
            for index in range(first, len(batches)):
                if group.size == 1:
                    batch = {
                        k: v.to(accelerator.device)
                        for k, v in collate_sft([train[i] for i in batches[index]], pad_id).items()
                    }
                    loss_sum, count = sft_loss_sum(model, batch)
                    loss = shown = loss_sum / max(1, count)
                else:
                    loss, shown = _sharded_sft_loss(model, train, batches[index], group, pad_id)
                guarded_step(accelerator, model, loss, optimizer, scheduler, cfg.grad_clip, step)
                if step % log_every == 0:
                    shown = float(group.sum(shown.detach()))  # every process takes part
                    metrics = {"train_loss": shown, "lr": scheduler.get_last_lr()[0]}
                    on_log(step, metrics, steps_per_epoch * epochs, "step")
                step += 1
                after_step(
                    store,
                    step,
                    lambda s=step, e=epoch, b=index + 1: loop_state(
                        accelerator,
                        model,
                        optimizer,
                        scheduler,
                        step=s,
                        epoch=e,
                        batch=b,
                        carry=dict(carry or {}),
                    ),
                )
        unwrapped = accelerator.unwrap_model(model)
        on_epoch(epoch, response_loss(unwrapped, valid, pad_id), unwrapped)


def _sharded_sft_loss(model, train, rows: list[int], group: Group, pad_id: int):
    """This process's share of the global batch's mean token loss, and its part of that mean.

    share = local token sum * N / global tokens: DDP averages the N gradients,
    which gives the gradient of the global mean (not a mean of shard means).
    """
    mine, real = group.batch_shard(rows)
    batch = {
        k: v.to(group.accelerator.device)
        for k, v in collate_sft([train[i] for i in mine], pad_id).items()
    }
    total, _ = sft_loss_sum(model, batch)
    total = total if real else total * 0.0
    count = labelled_tokens([train[i] for i in rows])
    return total * group.size / count, total / count


def shuffled(items: list, seed: int) -> list:
    out = list(items)
    random.Random(seed).shuffle(out)
    return out
