"""Evaluation on a user's dataset: no gold oracle, no simulated labelers.

Every policy answers the test split's prompts with the same decoding setting
as on the embedded world (instructflow.tasks.evaluation.sample). Per policy the report has
`gold_score: null` (there is no gold), the training reward model's score (the
proxy PPO climbed, so not evidence of quality), KL to SFT, response length,
and perplexity on the dataset's held-out pretraining text when it has some.

Win rates against SFT come from a judge: a reward model trained only on
held-out preferences (the test split), never on what the training RM saw.
The judge is instructflow.tasks.judge's (`judge_dir`, the judge stage's folder); without
one the report says `win_rate_vs_sft: null` and why, rather than letting the
training RM grade its own policy. Its win rates are plotted as the embedded
world's labelers' are (instructflow.tasks.plots.judged_plots).

Every policy is prompted with the test prompts as rendered (a conversation
through the base model's chat template); a response row of a conversation's
prompt also carries `readable_prompt`, its turns as people read them
(instructflow.tasks.conversations.READABLE_PROMPTS), which `instructflow eval
export` shows labelers in place of the template's markup.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
from prefect import task

from instructflow.models.lm import load_causal_lm
from instructflow.models.lm_training import pack_corpus, perplexity
from instructflow.models.reward_model import reward_model_from_causal_lm
from instructflow.tasks import match_lines
from instructflow.tasks.conversations import READABLE_PROMPTS
from instructflow.tasks.eval_scoring import rm_scores
from instructflow.tasks.evaluation import (
    CANDIDATES,
    PLOTS,
    EvalConfig,
    Policy,
    flat_metrics,
    load_test_prompts,
    sample,
    stop_point,
)
from instructflow.tasks.judge import HeldOutJudge
from instructflow.tasks.plots import judged_plots
from instructflow.tasks.splits import TEST_USERS
from instructflow.tasks.stage import (
    import_closure_digest,
    prefect_options,
)
from instructflow.tasks.stats import prompt_mean_with_ci
from instructflow.tasks.tables import read_jsonl, write_jsonl
from instructflow.tasks.tracked import StageResult, tracked_stage
from instructflow.world import layout

NO_JUDGE = "no held-out judge given: win rates need a judge trained on held-out preferences"


def readable_prompts(profile_dir: Path) -> dict[str, str]:
    """prompt_id -> the prompt as people read it, for the test prompts that were conversations
    (none when the dataset's were all text, or its folder was written before there were any)."""
    path = profile_dir / READABLE_PROMPTS
    rows = read_jsonl(path) if path.exists() else []
    return {row["prompt_id"]: row["readable_prompt"] for row in rows}


def _perplexity(model, blocks) -> float | None:
    """Perplexity on the held-out pretraining text; None without any (no pretrain table, or
    held-out documents too short to fill one 128-token block), not a figure measured on
    nothing."""
    return perplexity(model, blocks) if len(blocks) else None


def _response_row(pid: str, sample: int, prompt: str, text: str, readable: dict) -> dict:
    row = {"prompt_id": pid, "sample": sample, "prompt": prompt, "response": text}
    return row | ({"readable_prompt": readable[pid]} if pid in readable else {})


def evaluate_own(
    policies: list[Policy],
    sft_dir: Path,
    rm_dir: Path,
    profile_dir: Path,
    cfg: EvalConfig,
    seed: int,
    judge_dir: Path | None = None,
) -> tuple[dict, dict]:
    prompts, ids = load_test_prompts(profile_dir, cfg)
    readable = readable_prompts(profile_dir)  # what people read; the models get `prompts`
    n = cfg.samples_per_prompt
    sft = load_causal_lm(sft_dir)
    rm, rm_tokenizer = reward_model_from_causal_lm(rm_dir)
    pretrain_path = profile_dir / layout.PRETRAIN_VALID
    pretrain_valid = (
        [r["text"] for r in read_jsonl(pretrain_path)] if pretrain_path.exists() else []
    )
    judge = HeldOutJudge.load(judge_dir) if judge_dir else None
    # SFT's reference samples use their own seed: "sft vs sft" is two samples (expected 0.5).
    reference = sample(Policy("sft", sft_dir), prompts, cfg, seed + 1000).texts

    rows, raw = {}, {}
    for index, policy in enumerate(policies):
        print(
            f"evaluating {policy.name} on {len(prompts) // n} test prompts x {n} samples",
            flush=True,
        )
        resp = sample(policy, prompts, cfg, seed + index, sft=sft)
        model, tokenizer = load_causal_lm(policy.model_dir)
        kl = [lp - ref for lp, ref in zip(resp.logprobs, resp.sft_logprobs, strict=True)]
        win = None
        if judge:
            wins = judge.compare_many(prompts, resp.texts, reference)
            win = prompt_mean_with_ci(wins, n, seed)
        rows[policy.name] = {
            "gold_score": None,
            "win_rate_vs_sft": win,
            "likert": None,
            "rm_score": {"mean": sum(rm_scores(rm, rm_tokenizer, prompts, resp.texts)) / len(ids)},
            "kl_to_sft": sum(kl) / len(kl),
            "response_length": sum(len(t.split()) for t in resp.texts) / len(ids),
            "pretrain_perplexity": _perplexity(model, pack_corpus(tokenizer, pretrain_valid, 128)),
        }
        raw[policy.name] = [
            _response_row(pid, i % n, p, t, readable)
            for i, (pid, p, t) in enumerate(zip(ids, prompts, resp.texts, strict=True))
        ]
        stop_point(f"after judging {policy.name}")
    return rows, raw


def judged_match(
    challenger: Policy,
    incumbent: Policy,
    profile_dir: Path,
    cfg: EvalConfig,
    seed: int,
    judge_dir: Path,
) -> dict:
    """Challenger against incumbent on the test split's prompts, as the held-out judge sees it.

    As on the embedded world (instructflow.tasks.evaluation.head_to_head), each
    is sampled with its own model and tokenizer and judged on the text, so a
    champion trained from another base model is a fair rival.
    """
    prompts, _ = load_test_prompts(profile_dir, cfg)
    n = len(prompts) // cfg.samples_per_prompt
    match_lines.announce(
        challenger.name, incumbent.name, n, cfg.samples_per_prompt, "the held-out judge"
    )
    judge = HeldOutJudge.load(judge_dir)
    ours = sample(challenger, prompts, cfg, seed).texts
    theirs = sample(incumbent, prompts, cfg, seed + 1).texts
    wins = judge.compare_many(prompts, ours, theirs)
    win_rate = prompt_mean_with_ci(wins, cfg.samples_per_prompt, seed)
    match_lines.result(challenger.name, incumbent.name, win_rate)
    return {"win_rate": win_rate, "prompts": n}


@task(
    **prefect_options("own-evaluation", import_closure_digest("instructflow.tasks.own_evaluation"))
)
def evaluation_task(
    policies: dict[str, dict],
    sft_dir: str,
    rm_dir: str,
    profile_dir: str,
    cfg: EvalConfig,
    seed: int,
    judge_dir: str | None,
    out_dir: str,
    parent_run_id: str,
    judge_warning: str | None = None,
    held_out: str = TEST_USERS,
) -> StageResult:
    """`judge_warning`: judge_trust.untrusted_caption of the judge under the gate's floor
    (None: trusted), drawn on the win-rate plots; `held_out` (splits.held_out_group) titles
    them. Scalar arguments, so part of the cache key."""
    params = cfg.model_dump() | {
        "seed": seed,
        "policies": ",".join(policies),
        "judge": judge_dir or "none",
        "judge_trust": judge_warning or "trusted",  # what its win-rate plots are headed with
    }
    with tracked_stage("evaluation", out_dir, parent_run_id, params) as stage:
        out = stage.out
        listed = [
            Policy(name, Path(p["model_dir"]), p.get("prefix", "")) for name, p in policies.items()
        ]
        judge = Path(judge_dir) if judge_dir else None
        rows, raw = evaluate_own(
            listed, Path(sft_dir), Path(rm_dir), Path(profile_dir), cfg, seed, judge
        )
        (out / "policies.json").write_text(json.dumps(rows, indent=2))
        for name, items in raw.items():
            write_jsonl(out / "responses" / f"{name}.jsonl", items)
        # Drawn here, as on the embedded world, so that a cached evaluation brings them along.
        drawn = judged_plots(rows, out / PLOTS, CANDIDATES, judge_warning, held_out)
        mlflow.log_artifacts(str(out), artifact_path="evaluation")
        plots = [str(f.relative_to(out)) for f in drawn]
        return stage.done(flat_metrics(rows), rows=rows, plots=plots, dir=str(out))
