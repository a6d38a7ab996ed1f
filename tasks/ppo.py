"""PPO / PPO-ptx stage: optimise the SFT policy against the reward model, watching for over-optimisation.

Networks: the policy starts as the SFT model; a frozen copy of SFT is the KL
reference; the value model starts as the reward model (trunk and head); the
reward model is frozen. Prompts: training users' PPO prompts; validation
users' PPO prompts decide which checkpoint is kept.

Every `eval_every` iterations the policy answers the validation prompts
(same sampling seed each time, so points differ by the policy only) and the
stage records (KL to SFT, validation RM score, validation gold score). The
gold score is the world's hidden truth: it is plotted against KL next to the
RM score (over-optimisation shows as RM rising while gold falls) and reported,
but it never chooses a checkpoint or stops the run. Those use the RM only:

- checkpoint: each point is worth the RLHF objective on held-out prompts,
  (RM - RM_SFT) / sd - kl_price * KL, with sd the spread of SFT's validation
  RM scores (so the price does not depend on the RM's scale). A later point
  replaces the kept one if it raises this by more than `min_gain` and stays
  within `kl_budget`. The price makes extra KL pay for itself in RM score:
  once the RM gain per nat falls below `kl_price` (diminishing returns, where
  over-optimisation starts) later checkpoints are not taken;
- stopping: no kept checkpoint for `patience` evaluations, or KL past `kl_budget`.

Resumable: every `checkpoint_every` iterations the whole training state
(weights, optimizers, KL controller, RNGs, monitor history, best policy) is
written to out_dir/resume/ atomically. A run killed half-way and started
again with the same parameters has the same out_dir and continues from there.
"""

import json
import math
import time
from pathlib import Path

import mlflow
import torch
from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from models.checkpoints import CheckpointStore
from models.lm import load_causal_lm, save_model
from models.lm_training import pack_corpus, perplexity
from models.lora import add_lora, merged, trainable_fraction
from models.numeric import in_stage
from models.ppo import Normalization, PPOHyper, PPOTrainer, hyper_field_names, ppo_train
from models.reward_model import reward_model_from_causal_lm
from models.runtime import PeakMemory
from tasks import interrupts, layout, tracking
from tasks.checkpoints import RESUME, finish, prepare_out_dir
from tasks.concurrency import training_slot
from tasks.stage import import_closure_digest, mark_done, prefect_options
from tasks.stats import standard_error
from tasks.tables import load_table, read_jsonl
from tasks.training_options import LoraOptions, Precision, precision_field
from world.judge import GoldJudge

CURVE_JSON = "overoptimization.json"
CURVE_PNG = "overoptimization.png"
ADAPTER = "adapter"


class PPOStageConfig(BaseModel):
    """PPO / PPO-ptx (defaults sized for profile "tiny": about 2-4 minutes on 1-2 CPU threads)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    iterations: int = Field(
        150, ge=1, description="Maximum rollout + update cycles (the stopping rule may end sooner)."
    )
    rollout_batch: int = Field(
        64, ge=1, description="Training prompts (one sampled response each) per iteration."
    )
    minibatch_size: int = Field(32, ge=1, description="Responses per gradient step.")
    ppo_epochs: int = Field(
        2,
        ge=1,
        description="Passes over each rollout batch (2 learns as much per second as 4 here).",
    )
    lr: float = Field(
        1e-4,
        gt=0,
        description="Policy learning rate (AdamW, constant); 3e-5 moves too slowly for the 1M-parameter tiny model.",
    )
    value_lr: float = Field(1e-4, gt=0, description="Value-model learning rate (AdamW, constant).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay of both networks.")
    clip_eps: float = Field(0.2, gt=0, description="Surrogate clip range.")
    value_clip: float = Field(
        0.2, gt=0, description="Value clip range (in normalised reward units)."
    )
    gae_lambda: float = Field(0.95, ge=0, le=1, description="GAE lambda.")
    gamma: float = Field(1.0, ge=0, le=1, description="Per-token discount.")
    kl_beta: float = Field(
        0.2,
        ge=0,
        description="KL penalty coefficient on normalised rewards (initial value if adaptive); at 0.05 the tiny RM is over-optimised within ~20 iterations.",
    )
    adaptive_kl: bool = Field(False, description="Adapt beta so the rollout KL tracks target_kl.")
    target_kl: float = Field(
        1.0,
        gt=0,
        description="Target KL to SFT per response (nats) for the adaptive controller (gold peaked around 0.5-1 on tiny).",
    )
    kl_horizon: int = Field(10000, ge=1, description="Adaptive controller horizon (samples).")
    ptx_batch_size: int = Field(
        8, ge=1, description="Pretraining blocks per policy step (PPO-ptx only)."
    )
    ptx_block_size: int = Field(
        128, ge=2, description="Tokens per packed pretraining block (PPO-ptx only)."
    )
    max_new_tokens: int = Field(
        24, ge=1, description="Longest response sampled (as in evaluation)."
    )
    temperature: float = Field(1.0, gt=0, description="Sampling temperature (as in evaluation).")
    no_eos_penalty: float = Field(
        1.0,
        ge=0,
        description="Subtracted from the normalised score of a response cut off without EOS.",
    )
    reward_normalization: Normalization = Field(
        "reference",
        description='"reference": RM score standardised by the SFT samples\' mean/std (fixed); "running": updated every rollout; "none": raw.',
    )
    invert_reward: bool = Field(
        False,
        description="Train against the negated RM score (a deliberately worse policy, to test the promotion gate).",
    )
    reference_samples: int = Field(
        256, ge=1, description="SFT samples that fit the reward normalisation."
    )
    grad_clip: float = Field(1.0, gt=0, description="Max gradient norm per network.")
    eval_every: int = Field(
        5, ge=1, description="Iterations between validation evaluations (checkpoint choice, curve)."
    )
    eval_prompts: int | None = Field(
        256, ge=1, description="Validation prompts per evaluation (None: all)."
    )
    checkpoint_every: int = Field(
        5, ge=1, description="Iterations between resumable checkpoints in out_dir/resume."
    )
    kl_price: float = Field(
        0.2,
        ge=0,
        description="Checkpoint choice: validation RM gain (in SFT-sample RM standard deviations) one nat of KL to SFT must buy.",
    )
    min_gain: float = Field(
        0.0,
        description="A later checkpoint is kept only if it raises the validation objective (RM gain - kl_price * KL) by more than this.",
    )
    patience: int = Field(
        4, ge=1, description="Stop after this many evaluations without a kept checkpoint."
    )
    kl_budget: float | None = Field(
        None,
        gt=0,
        description="Stop past this validation KL to SFT (nats); such a point is never kept. None: no budget.",
    )
    lora: LoraOptions | None = Field(
        None,
        description="LoRA adapters on the policy and the value model (null: full fine-tuning). The SFT reference is the policy with adapters off, the reward model the value model with adapters off: one copy of each network. The kept policy is saved merged.",
    )
    precision: Precision = precision_field()


SMOKE_OVERRIDES: dict = {
    "iterations": 4,
    "rollout_batch": 16,
    "minibatch_size": 8,
    "ppo_epochs": 2,
    "eval_every": 2,
    "eval_prompts": 32,
    "checkpoint_every": 2,
    "reference_samples": 32,
    "ptx_batch_size": 4,
}
"""Overrides for profile "smoke": the stage runs in about 20 s."""


def make_hyper(cfg: PPOStageConfig, ptx_gamma: float, seed: int) -> PPOHyper:
    shared = {
        name: getattr(cfg, name)
        for name in hyper_field_names()
        if name not in ("ptx_gamma", "seed")
    }
    return PPOHyper(**shared, ptx_gamma=ptx_gamma, seed=seed)


# ------------------------------------------------------------------ resume checkpoints


def _store(out_dir: Path) -> CheckpointStore:
    # ppo_train decides when to checkpoint; the store keeps the last two, verified by digest.
    return CheckpointStore(out_dir / RESUME, every=1)


def write_resume(out_dir: Path, payload: dict) -> None:
    """Save the resume checkpoint (atomic, with its digest) and its history as readable JSON."""
    saved = _store(out_dir).save(payload["trainer"]["iteration"], payload)
    (saved / "history.json").write_text(json.dumps(payload["history"], indent=2))


def find_resume(out_dir: Path) -> Path | None:
    found = _store(out_dir).checkpoints()
    return found[0] if found else None


def read_resume(out_dir: Path) -> dict | None:
    """The newest checkpoint that passes its digest check (an older one, with a warning, if not)."""
    return _store(out_dir).load()


# ------------------------------------------------------------------ over-optimisation monitor


def plot_curve(points: list[dict], chosen: int, path: Path, title: str) -> None:
    """RM score and gold score against KL to SFT, the kept checkpoint marked.

    The gold score carries +-1 standard error over the validation prompts: the
    gold axis is scaled to its own range, and without the bars a wiggle of
    sampling noise reads like over-optimisation.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kl = [p["kl"] for p in points]
    fig, ax_rm = plt.subplots(figsize=(6.4, 4.2))
    ax_gold = ax_rm.twinx()
    ax_rm.plot(
        kl, [p["rm"] for p in points], "o-", color="tab:blue", label="validation RM score (proxy)"
    )
    ax_gold.errorbar(
        kl,
        [p["gold"] for p in points],
        yerr=[p.get("gold_se", 0.0) for p in points],  # points resumed from older runs have none
        fmt="s-",
        color="tab:orange",
        capsize=3,
        label="validation gold score (truth), +-1 s.e.",
    )
    ax_rm.axvline(
        points[chosen]["kl"],
        color="grey",
        linestyle="--",
        label=f"kept: iteration {points[chosen]['iteration']}",
    )
    for p in points:
        ax_rm.annotate(
            str(p["iteration"]),
            (p["kl"], p["rm"]),
            fontsize=7,
            textcoords="offset points",
            xytext=(2, 4),
        )
    ax_rm.set_xlabel("KL(policy || SFT) per response, nats")
    ax_rm.set_ylabel("RM score", color="tab:blue")
    ax_gold.set_ylabel("gold score", color="tab:orange")
    handles = [h for ax in (ax_rm, ax_gold) for h in ax.get_legend_handles_labels()[0]]
    ax_rm.legend(handles, [h.get_label() for h in handles], loc="lower right", fontsize=8)
    ax_rm.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def new_history() -> dict:
    return {
        "points": [],
        "chosen": None,
        "rm_scale": None,
        "evals_without_gain": 0,
        "stop_reason": None,
        "resumed_at": [],
    }


def record_evaluation(
    history: dict, point: dict, rm_scores: torch.Tensor, cfg: PPOStageConfig
) -> bool:
    """Add an evaluation point; update the kept checkpoint and the stopping rule. True: keep this policy.

    Each point is worth objective = (RM - RM_SFT) / scale - kl_price * KL, where
    scale is the spread of the SFT policy's validation RM scores (the first
    point): the RLHF objective on held-out prompts, in RM units that do not
    depend on how the RM happens to be scaled. A point replaces the kept one
    if it raises the objective by more than `min_gain` within `kl_budget`.
    """
    points = history["points"]
    if not points:  # the SFT policy: its scores set the scale
        history["rm_scale"] = max(float(rm_scores.std()), 1e-6) if rm_scores.numel() > 1 else 1.0
    sft_rm = points[0]["rm"] if points else point["rm"]
    point["objective"] = (point["rm"] - sft_rm) / history["rm_scale"] - cfg.kl_price * point["kl"]
    points.append(point)
    over_budget = cfg.kl_budget is not None and point["kl"] > cfg.kl_budget
    chosen = history["chosen"]
    gain = chosen is None or point["objective"] > points[chosen]["objective"] + cfg.min_gain
    keep = gain and not over_budget
    if keep:
        history["chosen"], history["evals_without_gain"] = len(points) - 1, 0
    else:
        history["evals_without_gain"] += 1
    if over_budget:
        history["stop_reason"] = f"validation KL {point['kl']:.2f} > kl_budget {cfg.kl_budget}"
    elif history["evals_without_gain"] >= cfg.patience:
        history["stop_reason"] = (
            f"validation objective did not improve by > {cfg.min_gain} in {cfg.patience} evaluations"
        )
    return keep


# ------------------------------------------------------------------ the stage


def run_ppo(
    stage_name: str,
    sft_dir: Path,
    rm_dir: Path,
    profile_dir: Path,
    cfg: PPOStageConfig,
    ptx_gamma: float,
    seed: int,
    out_dir: Path,
    log,
) -> dict:
    """Train with PPO (ptx_gamma = 0) or PPO-ptx, keep the chosen policy in out_dir/model; return metrics.

    `log(step, metrics)` receives every iteration's `ppo/...` metrics and the
    validation points (`ppo/valid_rm`, `ppo/valid_gold`, `ppo/valid_kl`). The
    returned summary is namespaced by `stage_name` ("ppo" or "ppo_ptx").
    Continues from out_dir/resume if a checkpoint is there.
    """
    if stage_name not in ("ppo", "ppo_ptx"):
        raise ValueError(f"stage_name must be 'ppo' or 'ppo_ptx', got {stage_name!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    memory = PeakMemory().start()
    policy, tokenizer = load_causal_lm(sft_dir)
    value_model, rm_tokenizer = reward_model_from_causal_lm(rm_dir)
    if cfg.lora is not None:
        # Frozen SFT and RM are these same networks with their adapters off.
        policy = add_lora(policy, cfg.lora.spec(), "causal_lm")
        value_model = add_lora(value_model, cfg.lora.spec(), "reward")
        ref_policy = reward_model = None
    else:
        ref_policy, _ = load_causal_lm(sft_dir)
        reward_model, _ = reward_model_from_causal_lm(rm_dir)
    train = load_table(profile_dir / layout.PPO_TRAIN, "prompts")
    valid = load_table(profile_dir / layout.PPO_VALID, "prompts").head(cfg.eval_prompts)
    # The gold judge exists for the embedded world only; on a user's own data gold is NaN.
    judge = GoldJudge.load(profile_dir) if (profile_dir / layout.GOLD_KEY).exists() else None
    train_ids, valid_ids, valid_prompts = (
        list(train["prompt_id"]),
        list(valid["prompt_id"]),
        list(valid["prompt"]),
    )
    # A user's dataset may have no pretraining text: no perplexity (and no ptx) then.
    has_pretrain = (profile_dir / layout.PRETRAIN_VALID).exists()
    pretrain_valid = pack_corpus(
        tokenizer,
        [r["text"] for r in read_jsonl(profile_dir / layout.PRETRAIN_VALID)]
        if has_pretrain
        else [],
        cfg.ptx_block_size,
    )
    ptx_blocks = None
    if ptx_gamma > 0:
        ptx_blocks = pack_corpus(
            tokenizer,
            [r["text"] for r in read_jsonl(profile_dir / layout.PRETRAIN_TRAIN)],
            cfg.ptx_block_size,
        )

    trainer = PPOTrainer(
        policy,
        ref_policy,
        value_model,
        reward_model,
        tokenizer,
        rm_tokenizer,
        make_hyper(cfg, ptx_gamma, seed),
    )

    def gold(prompt_id: str, text: str) -> float:
        return judge.score(prompt_id, text) if judge is not None else float("nan")

    def snapshot() -> dict:
        return trainer.policy_weights()

    def evaluate(iteration: int) -> None:
        result = trainer.evaluate(valid_prompts, seed=seed + 1)
        golds = [gold(pid, text) for pid, text in zip(valid_ids, result.texts, strict=True)]
        point = {
            "iteration": iteration,
            "kl": float(result.kl.mean()),
            "rm": float(result.rm_score.mean()),
            "gold": sum(golds) / len(golds),
            "gold_se": standard_error(golds),
            "no_eos_fraction": float(result.truncated.float().mean()),
        }
        if record_evaluation(history, point, result.rm_score, cfg):
            state["best_policy"] = snapshot()
        log(
            iteration,
            {
                "ppo/valid_rm": point["rm"],
                "ppo/valid_gold": point["gold"],
                "ppo/valid_kl": point["kl"],
            },
        )
        print(
            f"[{stage_name}] eval @ {iteration}: KL {point['kl']:.3f}  RM {point['rm']:.3f}  gold {point['gold']:.3f}",
            flush=True,
        )

    resume = read_resume(out_dir)
    if resume is not None:
        trainer.load_state_dict(resume["trainer"])
        history, state = resume["history"], {"best_policy": resume["best_policy"]}
        history["resumed_at"].append(trainer.iteration)
        print(f"[{stage_name}] resuming at iteration {trainer.iteration}", flush=True)
    else:
        history, state = new_history(), {}
        evaluate(0)  # the SFT policy itself: KL 0, the baseline every later point must beat

    def on_iteration(index: int, metrics: dict) -> bool:
        log(index, metrics)
        done = index + 1
        if done % cfg.eval_every == 0 or done == cfg.iterations:
            evaluate(done)
        return history["stop_reason"] is not None

    def checkpoint(trained: PPOTrainer) -> None:
        write_resume(
            out_dir,
            {
                "trainer": trained.state_dict(),
                "history": history,
                "best_policy": state["best_policy"],
            },
        )

    def monitor(indices: list[int], texts: list[str]) -> float:
        return sum(gold(train_ids[i], t) for i, t in zip(indices, texts, strict=True)) / len(texts)

    start, first_iteration = time.perf_counter(), trainer.iteration
    ppo_train(
        trainer,
        list(train["prompt"]),
        ptx_blocks,
        on_iteration,
        monitor,
        checkpoint,
        cfg.checkpoint_every,
    )
    seconds = time.perf_counter() - start

    # The kept policy, the curve and the summary.
    with trainer.reference() as sft_policy:  # with LoRA: the policy's adapters off
        sft_perplexity = perplexity(sft_policy, pretrain_valid) if has_pretrain else float("nan")
    fraction = trainable_fraction(trainer.unwrapped_policy)
    trainer.load_policy_weights(state["best_policy"])
    final = trainer.unwrapped_policy
    if trainer.policy_adapters is not None:
        trainer.policy_adapters.save_pretrained(out_dir / ADAPTER)
        final = merged(trainer.policy_adapters)  # a plain Hugging Face model
    save_model(final, tokenizer, out_dir / "model")
    points, chosen = history["points"], history["chosen"]
    peak_point = max(points, key=lambda p: p["gold"] if p["gold"] == p["gold"] else -math.inf)
    peak = peak_point["gold"]
    summary = {
        "chosen_iteration": points[chosen]["iteration"],
        "chosen_rm": points[chosen]["rm"],
        "chosen_kl": points[chosen]["kl"],
        "chosen_gold": points[chosen]["gold"],
        "peak_gold": peak,
        "peak_gold_iteration": peak_point["iteration"],
        "gold_fraction_of_peak": points[chosen]["gold"] / peak if peak > 0 else float("nan"),
        "sft_gold": points[0]["gold"],
        "sft_rm": points[0]["rm"],
        "iterations_run": trainer.iteration,
        "stopped_early": float(trainer.iteration < cfg.iterations),
        "seconds_per_iteration": seconds / max(1, trainer.iteration - first_iteration),
        "pretrain_perplexity": perplexity(final, pretrain_valid) if has_pretrain else float("nan"),
        "sft_pretrain_perplexity": sft_perplexity,
        "trainable_fraction": fraction,
        "peak_memory_mb": memory.peak_bytes() / 2**20,
    }
    curve = {
        "stage": stage_name,
        "ptx_gamma": ptx_gamma,
        "points": points,
        "chosen": chosen,
        "stop_reason": history["stop_reason"],
        "summary": summary,
    }
    (out_dir / CURVE_JSON).write_text(json.dumps(curve, indent=2))
    plot_curve(points, chosen, out_dir / CURVE_PNG, f"{stage_name}: proxy vs gold reward")
    return {f"{stage_name}/{k}": float(v) for k, v in summary.items()}


def _log_to_mlflow(step: int, metrics: dict[str, float]) -> None:
    tracking.log_metrics(metrics, step=step)
    shown = ("ppo/reward_rm", "ppo/reward_gold", "ppo/kl", "ppo/clipfrac", "ppo/seconds")
    if "ppo/kl" in metrics:
        print(
            f"[ppo] iteration {step}: " + ", ".join(f"{k[4:]}={metrics[k]:.4g}" for k in shown),
            flush=True,
        )


PPO_CODE = import_closure_digest("tasks.ppo")


@task(**prefect_options("ppo", PPO_CODE, retries=1))
def ppo_task(
    stage: str,
    sft_dir: str,
    rm_dir: str,
    profile_dir: str,
    cfg: PPOStageConfig,
    ptx_gamma: float,
    seed: int,
    out_dir: str,
    parent_run_id: str,
) -> dict:
    """`stage` is "ppo" (ptx_gamma 0) or "ppo_ptx". An unfinished run in out_dir is resumed, not restarted."""
    out = Path(out_dir)
    prepare_out_dir(out)
    interrupts.reclaim()  # SIGINT/SIGTERM: checkpoint, then stop
    resumed = find_resume(out) is not None
    with (
        in_stage(stage),
        training_slot(),
        tracking.stage_run(stage, parent_run_id, tags={"resumed": str(resumed).lower()}) as run,
    ):
        mlflow.log_params(cfg.model_dump() | {"seed": seed, "ptx_gamma": ptx_gamma})
        metrics = run_ppo(
            stage,
            Path(sft_dir),
            Path(rm_dir),
            Path(profile_dir),
            cfg,
            ptx_gamma,
            seed,
            out,
            _log_to_mlflow,
        )
        tracking.log_metrics(metrics)
        mlflow.log_artifact(str(out / CURVE_PNG))
        mlflow.log_artifact(str(out / CURVE_JSON))
        mlflow.log_artifacts(str(out / "model"), artifact_path="model")
        if (out / ADAPTER).exists():  # the policy's adapter and its config
            mlflow.log_artifacts(str(out / ADAPTER), artifact_path=ADAPTER)
        result = mark_done(
            out,
            {"model_dir": str(out / "model"), "mlflow_run_id": run.info.run_id, "metrics": metrics},
        )
    finish(out)  # the run is complete: nothing to resume
    return result
