"""PPO / PPO-ptx stage: optimise the SFT policy against the reward model, watching for over-optimisation.

Networks: the policy starts as the SFT model; a frozen copy of SFT is the KL
reference; the value model starts as the reward model (trunk and head); the
reward model is frozen. Prompts: training users' PPO prompts; validation
users' PPO prompts decide which checkpoint is kept (tasks/ppo_selection.py),
and the gold score is plotted against KL next to the RM score
(tasks/ppo_plot.py) but never chooses anything.

Settings: tasks/ppo_config.py. Resumable: tasks/ppo_resume.py.
"""

import json
import math
import time
from pathlib import Path

import mlflow
from prefect import task

from instructflow.models.distributed import main_process
from instructflow.models.lm import load_causal_lm, save_model
from instructflow.models.lm_training import pack_corpus, perplexity
from instructflow.models.lora import add_lora, merged, trainable_fraction
from instructflow.models.ppo import PPOTrainer
from instructflow.models.ppo_loop import ppo_train
from instructflow.models.reward_model import reward_model_from_causal_lm
from instructflow.models.runtime import PeakMemory
from instructflow.tasks import interrupts, launch, tracking
from instructflow.tasks.concurrency import takes_training_slot
from instructflow.tasks.ppo_config import PPOStageConfig, trainer_hyper
from instructflow.tasks.ppo_plot import curve_title, plot_curve
from instructflow.tasks.ppo_resume import find_resume, read_resume, write_resume
from instructflow.tasks.ppo_selection import new_history, record_evaluation
from instructflow.tasks.progress import Progress
from instructflow.tasks.stage import import_closure_digest, prefect_options
from instructflow.tasks.stats import standard_error
from instructflow.tasks.tables import load_table, read_jsonl
from instructflow.tasks.tracked import ADAPTER, StageResult, tracked_stage
from instructflow.world import layout
from instructflow.world.judge import GoldJudge

CURVE_JSON = "overoptimization.json"
CURVE_PNG = "overoptimization.png"


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
        policy = add_lora(policy, cfg.lora, "causal_lm", seed)
        value_model = add_lora(value_model, cfg.lora, "reward", seed)
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
        trainer_hyper(cfg),
        ptx_gamma=ptx_gamma,
        seed=seed,
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
        if main_process():  # under `accelerate launch` every process evaluates alike
            shown_gold = f"  gold {point['gold']:.3f}" if point["gold"] == point["gold"] else ""
            print(
                f"[{stage_name}] eval @ {iteration}: KL {point['kl']:.3f}  RM {point['rm']:.3f}{shown_gold}",
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
        log(index, metrics, cfg.iterations, "iteration")
        done = index + 1
        if done % cfg.eval_every == 0 or done == cfg.iterations:
            evaluate(done)
        stop = history["stop_reason"] is not None
        if stop and done < cfg.iterations and main_process():  # the progress lines just ended
            print(f"[{stage_name}] stopped at iteration {done}/{cfg.iterations}: "
                  f"{history['stop_reason']}", flush=True)  # fmt: skip
        return stop

    def checkpoint(trained: PPOTrainer) -> None:
        if not main_process():  # every process holds the same state: rank 0 writes it
            return
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
    if not main_process():  # the kept policy, the curve and the summary: rank 0 alone
        return {}

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
        # No gold on a user's dataset: no peak either (NaN is not logged), not iteration 0.
        "peak_gold_iteration": peak_point["iteration"] if peak == peak else float("nan"),
        "gold_fraction_of_peak": points[chosen]["gold"] / peak if peak > 0 else float("nan"),
        "sft_gold": points[0]["gold"],
        "sft_rm": points[0]["rm"],
        "iterations_run": trainer.iteration,
        "stopped_early": float(trainer.iteration < cfg.iterations),
        "seconds_per_iteration": seconds / max(1, trainer.iteration - first_iteration),
        "pretrain_perplexity": perplexity(final, pretrain_valid) if has_pretrain else float("nan"),
        "sft_pretrain_perplexity": sft_perplexity,
        "trainable_fraction": fraction,
        **memory.readings_mb(),  # peak_memory_mb, process_peak_memory_mb
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
    plot_curve(points, chosen, out_dir / CURVE_PNG, curve_title(stage_name, points))
    return {f"{stage_name}/{k}": float(v) for k, v in summary.items()}


CONSOLE_KEYS = ("ppo/reward_rm", "ppo/reward_gold", "ppo/kl", "ppo/clipfrac", "ppo/seconds")


def console_figures(metrics: dict[str, float]) -> dict[str, float] | None:
    """The figures of a PPO iteration's console line (None: a validation point, no line).

    No gold on a user's dataset (NaN): left out of the line rather than printed as nan.
    The same line in this process and in launched ones (instructflow.tasks.launch's
    `console`), where every key of the trainer's would otherwise be printed.
    """
    if "ppo/kl" not in metrics:
        return None
    return {k[4:]: metrics[k] for k in CONSOLE_KEYS if k in metrics and metrics[k] == metrics[k]}


def _ppo_logger(stage: str):
    """MLflow metrics and a console line per PPO iteration (with its progress)."""
    progress = Progress(stage)

    def log(
        step: int, metrics: dict[str, float], total: int | None = None, unit: str = "iteration"
    ) -> None:
        # The trainer's metric keys are ppo/... in both stages' MLflow runs (the algorithm's
        # namespace); the console line names the stage, so PPO-ptx's lines say [ppo_ptx].
        tracking.log_step_metrics(metrics, step)
        if (shown := console_figures(metrics)) is not None:
            print(progress.line(step, shown, total, unit), flush=True)

    return log


PPO_CODE = import_closure_digest("instructflow.tasks.ppo")


@task(**prefect_options("ppo", PPO_CODE, retries=1))
@takes_training_slot
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
    processes: int = 1,
) -> StageResult:
    """`stage` is "ppo" (ptx_gamma 0) or "ppo_ptx". An unfinished run in out_dir is resumed, not restarted.

    `processes` > 1 trains under `accelerate launch` (instructflow.tasks.launch).
    """
    interrupts.reclaim()  # SIGINT/SIGTERM: checkpoint, then stop
    params = cfg.model_dump() | {"seed": seed, "ptx_gamma": ptx_gamma}
    with tracked_stage(stage, out_dir, parent_run_id, params, training=True) as tracked:
        out = tracked.out  # an unfinished run's checkpoints kept: it resumes
        mlflow.set_tag("resumed", str(find_resume(out) is not None).lower())
        metrics = launch.run(
            run_ppo,
            {"stage_name": stage, "sft_dir": Path(sft_dir), "rm_dir": Path(rm_dir)}
            | {"profile_dir": Path(profile_dir), "cfg": cfg, "ptx_gamma": ptx_gamma}
            | {"seed": seed, "out_dir": out},
            processes=processes,
            work_dir=out,
            log=_ppo_logger(stage),
            log_prefix=None,  # the trainer's keys are ppo/... already
            label=stage,
            console=console_figures,
        )
        tracked.log_model()  # first: it waits for a tracking server lost while PPO trained
        mlflow.log_artifact(str(out / CURVE_PNG))
        mlflow.log_artifact(str(out / CURVE_JSON))
        return tracked.done(metrics, model_dir=str(out / "model"))
