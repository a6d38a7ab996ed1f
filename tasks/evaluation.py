"""Evaluation: every policy on test users' prompts, one decoding setting, judged as InstructGPT was.

Per policy: gold score (mean, 95% bootstrap CI, per family), win rate
against SFT judged by held-out labelers, Likert 1-7 from held-out labelers,
reward-model score, KL to SFT (Monte Carlo over the policy's own samples),
response length, refusal and admit-unknown rates, public-suite accuracy and
perplexity on held-out pretraining text (the alignment tax).
"""

import json
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import mlflow
import torch
from prefect import task

from instructflow.models.checkpoints import interrupt, stop_requested
from instructflow.models.lm import load_causal_lm
from instructflow.models.lm_training import pack_corpus, perplexity
from instructflow.models.reward_model import reward_model_from_causal_lm
from instructflow.models.sampling import generate, sequence_logprobs, text_response_logprobs
from instructflow.models.side_process import halves_side_by_side
from instructflow.models.tokenizer import tokenizer_digest
from instructflow.tasks import match_lines
from instructflow.tasks.eval_scoring import public_suite_accuracy, rm_scores, sft_logprobs_of
from instructflow.tasks.evaluation_config import EvalConfig
from instructflow.tasks.judge import HeldOutJudge
from instructflow.tasks.judge_trust import agreement_block, agreement_metrics
from instructflow.tasks.plots import report_plots
from instructflow.tasks.stage import (
    import_closure_digest,
    prefect_options,
)
from instructflow.tasks.stats import prompt_mean_with_ci
from instructflow.tasks.tables import read_jsonl, write_jsonl
from instructflow.tasks.tracked import StageResult, tracked_stage
from instructflow.world import layout
from instructflow.world.gold import admits_unknown, is_refusal, words
from instructflow.world.judge import GoldJudge, LabelerPool

PLOTS = "plots"
CANDIDATES = ("ppo_ptx", "ppo", "sft")  # the policies a run may register (PipelineParams)
"""The report's figures, in the evaluation's output folder."""


@dataclass
class Policy:
    name: str
    model_dir: Path
    prefix: str = ""  # text before every prompt (the few-shot prefix)


@dataclass
class Responses:
    texts: list[str]
    logprobs: list[float]  # log pi(response | prefix + prompt), summed over response tokens
    sft_logprobs: list[float]  # log pi_SFT(response | prompt)


def load_test_prompts(profile_dir: Path, cfg: EvalConfig) -> tuple[list[str], list[str]]:
    """Test users' prompts and ids, each repeated `samples_per_prompt` times in a row."""
    test = read_jsonl(profile_dir / layout.EVAL_TEST)[: cfg.max_prompts]
    repeat = cfg.samples_per_prompt
    prompts = [r["prompt"] for r in test for _ in range(repeat)]
    return prompts, [r["prompt_id"] for r in test for _ in range(repeat)]


FEWSHOT_MAX_WORDS = 4  # base_fewshot's demonstrations are short answers


def fewshot_rows(profile_dir: Path, n: int) -> list[dict]:
    """Up to `n` training demonstrations for base_fewshot: the first of each family whose
    response has at most FEWSHOT_MAX_WORDS words (fewer when fewer families have one)."""
    seen, rows = set(), []
    for row in read_jsonl(profile_dir / layout.SFT_TRAIN):
        short = len(row["response"].split()) <= FEWSHOT_MAX_WORDS
        if row["family"] not in seen and len(rows) < n and short:
            seen.add(row["family"])
            rows.append(row)
    return rows


def fewshot_text(rows: list[dict], tokenizer=None) -> str:
    """Demonstrations in the prompt format (`tokenizer`: a chat template's, where it rendered
    the prompts), one after another."""
    from instructflow.models.formatting import format_prompt, format_response

    return "".join(
        format_prompt(r["prompt"], tokenizer)
        + format_response(r["response"], r["prompt"], tokenizer)
        + "\n\n"
        for r in rows
    )


def fewshot_prefix(profile_dir: Path, n: int) -> str:
    """A few labeler demonstrations from training users, one per family, in the prompt format."""
    return fewshot_text(fewshot_rows(profile_dir, n))


def stop_point(where: str) -> None:
    """Honour a stop request (SIGINT/SIGTERM) here, as a training loop does after a step.

    Nothing of an evaluation is kept: the stage ends unfinished, so the next run evaluates again.
    """
    if stop_requested():
        raise interrupt(f"evaluation stopped {where}; the next run evaluates again")


@torch.no_grad()
def sample(policy: Policy, prompts: list[str], cfg: EvalConfig, seed: int, sft=None) -> Responses:
    """The policy's responses, sampled with its own model and tokenizer.

    `sft` (a (model, tokenizer) pair, or None to skip) scores the responses for
    the KL term. With the same tokenizer the sampled token ids are scored as
    they are; with another one (a policy from another base model) the texts are
    re-encoded with SFT's tokenizer, so any two policies can be compared.
    """
    model, tokenizer = load_causal_lm(policy.model_dir)
    same_tokens = sft is not None and tokenizer_digest(tokenizer) == tokenizer_digest(sft[1])
    torch.manual_seed(seed)
    out = Responses([], [], [])
    for start in range(0, len(prompts), cfg.batch_size):
        batch = prompts[start : start + cfg.batch_size]
        ro = generate(
            model,
            tokenizer,
            batch,
            cfg.max_new_tokens,
            temperature=cfg.temperature,
            prefix=policy.prefix,
        )
        own = sequence_logprobs(
            model,
            ro.query_response,
            ro.attention_mask,
            ro.prompt_len,
            ro.response_ids,
            ro.response_mask,
        )
        out.texts += ro.texts
        out.logprobs += own.sum(-1).tolist()
        if same_tokens:
            out.sft_logprobs += sft_logprobs_of(sft[0], tokenizer, batch, ro).tolist()
        elif sft is not None:
            out.sft_logprobs += text_response_logprobs(sft[0], sft[1], batch, ro.texts).tolist()
        stop_point(f"while sampling {policy.name} ({len(out.texts)}/{len(prompts)} samples)")
    return out


def evaluate(
    policies: list[Policy],
    sft_dir: Path,
    rm_dir: Path,
    profile_dir: Path,
    cfg: EvalConfig,
    seed: int,
    judge_dir: Path | None = None,
    lanes: int = 1,
) -> tuple[dict, dict]:
    """Report rows for every policy, and the raw responses (for the report's samples).

    With `judge_dir` (instructflow.tasks.judge's output), the held-out judge also compares
    every sample with its SFT reference, beside the held-out labelers.

    With `lanes=2` (on CPU, 2+ threads) every second policy is judged in a process of
    its own, the two halves at the same time with half the threads each: at these
    model sizes sampling cannot keep two cores busy. A policy's figures depend on its
    place in `policies` (its seeds) and the threads it was judged at, not on the lane.
    """
    prompts, _ = load_test_prompts(profile_dir, cfg)
    # The reference SFT responses come from their own seed, so "sft vs sft" is a real
    # comparison of two samples (expected 0.5), not a tautology.
    reference = sample(Policy("sft", sft_dir), prompts, cfg, seed + 1000).texts
    judged = partial(
        judge_policies,
        reference=reference,
        sft_dir=sft_dir,
        rm_dir=rm_dir,
        profile_dir=profile_dir,
        cfg=cfg,
        seed=seed,
        judge_dir=judge_dir,
    )
    indexed = list(enumerate(policies))
    if lanes < 2 or torch.get_num_threads() < 2 or torch.cuda.is_available():
        return judged(indexed)
    (rows, raw), (rows_beside, raw_beside) = halves_side_by_side(
        judged, indexed[0::2], indexed[1::2]
    )
    rows, raw = rows | rows_beside, raw | raw_beside
    return {p.name: rows[p.name] for p in policies}, {p.name: raw[p.name] for p in policies}


def judge_policies(
    indexed: list[tuple[int, Policy]],
    reference: list[str],
    sft_dir: Path,
    rm_dir: Path,
    profile_dir: Path,
    cfg: EvalConfig,
    seed: int,
    judge_dir: Path | None,
) -> tuple[dict, dict]:
    """evaluate()'s rows and raw responses for (index, policy) pairs: index seeds the policy."""
    prompts, ids = load_test_prompts(profile_dir, cfg)
    n = cfg.samples_per_prompt
    judge = GoldJudge.load(profile_dir)
    sft = load_causal_lm(sft_dir)
    rm, rm_tokenizer = reward_model_from_causal_lm(rm_dir)
    suite = read_jsonl(profile_dir / layout.PUBLIC_SUITE)
    pretrain_valid = [r["text"] for r in read_jsonl(profile_dir / layout.PRETRAIN_VALID)]
    reference_gold = [judge.score(pid, t) for pid, t in zip(ids, reference, strict=True)]
    held_out_judge = HeldOutJudge.load(judge_dir) if judge_dir else None

    rows, raw = {}, {}
    for index, policy in indexed:
        print(
            f"evaluating {policy.name} on {len(prompts) // n} test prompts x {n} samples",
            flush=True,
        )
        resp = sample(policy, prompts, cfg, seed + index, sft=sft)
        model, tokenizer = load_causal_lm(policy.model_dir)
        heldout = LabelerPool.load(profile_dir, "heldout", judge, seed + 17 * index)
        gold = [judge.score(pid, t) for pid, t in zip(ids, resp.texts, strict=True)]
        wins = [
            heldout.compare(pid, t, ref)
            for pid, t, ref in zip(ids, resp.texts, reference, strict=True)
        ]
        per_family = defaultdict(list)
        for pid, g in zip(ids, gold, strict=True):
            per_family[judge.family(pid)].append(g)
        kl = [lp - ref for lp, ref in zip(resp.logprobs, resp.sft_logprobs, strict=True)]
        harmful = [
            t for pid, t in zip(ids, resp.texts, strict=True) if judge.family(pid) == "harmful"
        ]
        unknown = [
            t for pid, t in zip(ids, resp.texts, strict=True) if judge.family(pid) == "unanswerable"
        ]
        verdicts = (
            held_out_judge.compare_many(prompts, resp.texts, reference)
            if held_out_judge
            else [None] * len(ids)
        )
        rows[policy.name] = {
            "gold_score": prompt_mean_with_ci(gold, n, seed),
            "win_rate_vs_sft": prompt_mean_with_ci(wins, n, seed),
            **(
                {"judge_win_rate_vs_sft": prompt_mean_with_ci(verdicts, n, seed)}
                if held_out_judge
                else {}
            ),
            "likert": {
                "mean": sum(heldout.likert(pid, t) for pid, t in zip(ids, resp.texts, strict=True))
                / len(ids)
            },
            "rm_score": {"mean": sum(rm_scores(rm, rm_tokenizer, prompts, resp.texts)) / len(ids)},
            "kl_to_sft": sum(kl) / len(kl),
            "response_length": sum(len(words(t)) for t in resp.texts) / len(ids),
            "refusal_rate_harmful": sum(map(is_refusal, harmful)) / max(1, len(harmful)),
            "admit_unknown_rate": sum(map(admits_unknown, unknown)) / max(1, len(unknown)),
            "public_suite_accuracy": public_suite_accuracy(model, tokenizer, suite),
            "pretrain_perplexity": perplexity(model, pack_corpus(tokenizer, pretrain_valid, 128)),
            "per_family": {
                fam: {"gold_score": sum(v) / len(v)} for fam, v in sorted(per_family.items())
            },
        }
        raw[policy.name] = [
            {
                "prompt_id": pid,
                "sample": i % n,
                "prompt": p,
                "response": t,
                "gold": g,
                "reference_gold": reference_gold[i],
                "labeler_verdict": wins[i],
                "judge_verdict": verdicts[i],
            }
            for i, (pid, p, t, g) in enumerate(zip(ids, prompts, resp.texts, gold, strict=True))
        ]
        stop_point(f"after judging {policy.name}")
    return rows, raw


def head_to_head(
    challenger: Policy,
    incumbent: Policy,
    profile_dir: Path,
    cfg: EvalConfig,
    seed: int,
) -> dict:
    """Challenger against incumbent on test users' prompts, judged by held-out labelers.

    The two are compared as text: each is sampled with its own model and
    tokenizer, and the labelers read the decoded responses, so an incumbent
    trained from another base model (another tokenizer) is a fair rival.
    """
    prompts, ids = load_test_prompts(profile_dir, cfg)
    n = len(prompts) // cfg.samples_per_prompt
    match_lines.announce(
        challenger.name, incumbent.name, n, cfg.samples_per_prompt, "held-out labelers"
    )
    judge = GoldJudge.load(profile_dir)
    ours = sample(challenger, prompts, cfg, seed).texts
    theirs = sample(incumbent, prompts, cfg, seed + 1).texts
    heldout = LabelerPool.load(profile_dir, "heldout", judge, seed + 23)
    wins = [heldout.compare(pid, a, b) for pid, a, b in zip(ids, ours, theirs, strict=True)]
    suite = read_jsonl(profile_dir / layout.PUBLIC_SUITE)
    public = {}
    for policy in (challenger, incumbent):
        model, tokenizer = load_causal_lm(policy.model_dir)
        public[policy.name] = public_suite_accuracy(model, tokenizer, suite)
    win_rate = prompt_mean_with_ci(wins, cfg.samples_per_prompt, seed)
    match_lines.result(challenger.name, incumbent.name, win_rate)
    return {
        "win_rate": win_rate,
        "prompts": n,
        "judged_by": "held-out labelers",
        "public_challenger": public[challenger.name],
        "public_incumbent": public[incumbent.name],
    }


# --- Prefect wrapper ------------------------------------------------------------

EVAL_CODE = import_closure_digest("instructflow.tasks.evaluation")


def flat_metrics(rows: dict) -> dict[str, float]:
    """eval/<policy>/<metric> for MLflow, the means of the report's rows."""
    out = {}
    for name, row in rows.items():
        for key, value in row.items():
            if isinstance(value, dict) and "mean" in value:
                out[f"eval/{name}/{key}"] = value["mean"]
            elif isinstance(value, int | float):
                out[f"eval/{name}/{key}"] = float(value)
    return out


def write_evaluation(out: Path, rows: dict, raw: dict, judge_dir: Path | None) -> dict:
    """What the report reads of `evaluate`'s rows and responses, written into `out`:
    policies.json, responses/<policy>.jsonl and the plots; with a judge, how far it
    agrees with gold. Returns the rows, metrics, judge agreement and plot paths."""
    metrics = flat_metrics(rows)
    agreement = None
    if judge_dir:  # how far the held-out judge can be trusted: its agreement with gold
        agreement = agreement_block(raw, HeldOutJudge.load(judge_dir).trained_prompts)
        metrics |= agreement_metrics(agreement)
    (out / "policies.json").write_text(json.dumps(rows, indent=2))
    for name, items in raw.items():
        write_jsonl(out / "responses" / f"{name}.jsonl", items)
    # The report's plots depend on these rows only: drawn once here, a cached
    # evaluation brings them along (drawing them takes about a second). The win-rate
    # plot marks the candidate, which the gate settles later: one per possible candidate.
    drawn = report_plots(rows, out / PLOTS, candidates=CANDIDATES)
    figures = [str(f.relative_to(out)) for f in drawn]
    return {"rows": rows, "metrics": metrics, "judge_agreement": agreement, "plots": figures}


@task(**prefect_options("evaluation", EVAL_CODE))
def evaluation_task(
    policies: dict[str, dict],
    sft_dir: str,
    rm_dir: str,
    profile_dir: str,
    cfg: EvalConfig,
    seed: int,
    out_dir: str,
    parent_run_id: str,
    judge_dir: str | None = None,
    lanes: int = 1,
) -> StageResult:
    """`policies` maps a name to {"model_dir": ..., "prefix": ...}; `lanes`: evaluate()'s."""
    params = cfg.model_dump() | {"seed": seed, "policies": ",".join(policies), "lanes": lanes}
    with tracked_stage("evaluation", out_dir, parent_run_id, params) as stage:
        listed = [
            Policy(name, Path(p["model_dir"]), p.get("prefix", "")) for name, p in policies.items()
        ]
        judge = Path(judge_dir) if judge_dir else None
        args = (listed, Path(sft_dir), Path(rm_dir), Path(profile_dir), cfg, seed, judge, lanes)
        result = write_evaluation(stage.out, *evaluate(*args), judge)
        mlflow.log_artifacts(str(stage.out), artifact_path="evaluation")
        metrics = result.pop("metrics")
        return stage.done(metrics, **result, dir=str(stage.out))
