"""How far can this reward model take a policy? Best-of-n on SFT samples, chosen by the RM.

PPO with a KL penalty reaches, at best, about what picking the RM's favourite
of n SFT samples reaches at a KL of about log(n) - (n - 1)/n nats. So the
win rate of "best of n by RM" against plain SFT samples is a ceiling on
what PPO can show with this RM, measured without any RL. The same table for
"best of n by gold" shows what a perfect RM would allow.

Test users' prompts, held-out labelers, and the evaluation's rule for ties
(identical texts count half), so the figures compare with the report's.
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from instructflow.models.lm import context_length, load_causal_lm
from instructflow.models.reward_model import reward_model_from_causal_lm
from instructflow.models.sampling import generate
from instructflow.tasks.reward_model import score_rows
from instructflow.tasks.stats import mean_with_ci
from instructflow.tasks.tables import read_jsonl
from instructflow.world import layout
from instructflow.world.judge import GoldJudge, LabelerPool


@dataclass
class Candidates:
    """n candidates and `references` separate SFT samples per prompt, with their scores."""

    prompt_ids: list[str]
    texts: list[list[str]]  # [prompt][candidate]
    references: list[list[str]]  # [prompt][reference]: what the chosen one is judged against
    rm: torch.Tensor  # [prompt, candidate]
    gold: torch.Tensor  # [prompt, candidate]


def best_of_first(scores: torch.Tensor, n: int) -> list[int]:
    """Index of the highest score among each row's first n candidates (the first on ties)."""
    if not 1 <= n <= scores.shape[1]:
        raise ValueError(f"n must be between 1 and {scores.shape[1]}, got {n}")
    return scores[:, :n].argmax(dim=1).tolist()


def sample_candidates(
    sft_dir: Path,
    rm_dir: Path,
    profile_dir: Path,
    n: int,
    references: int,
    max_prompts: int,
    seed: int,
    max_new_tokens: int = 24,
) -> Candidates:
    """n + references SFT samples (temperature 1, as in evaluation) per test prompt."""
    test = read_jsonl(profile_dir / layout.EVAL_TEST)[:max_prompts]
    model, tokenizer = load_causal_lm(sft_dir)
    per_prompt = n + references
    prompts = [row["prompt"] for row in test for _ in range(per_prompt)]
    torch.manual_seed(seed)
    texts: list[str] = []
    for start in range(0, len(prompts), 128):
        rollout = generate(model, tokenizer, prompts[start : start + 128], max_new_tokens)
        texts += rollout.texts
    grouped = [texts[i * per_prompt : (i + 1) * per_prompt] for i in range(len(test))]
    candidates = [group[:n] for group in grouped]

    rm, rm_tokenizer = reward_model_from_causal_lm(rm_dir)
    rows = [{"prompt": r["prompt"], "responses": c} for r, c in zip(test, candidates, strict=True)]
    judge = GoldJudge.load(profile_dir)
    return Candidates(
        prompt_ids=[r["prompt_id"] for r in test],
        texts=candidates,
        references=[group[n:] for group in grouped],
        rm=score_rows(rm, rm_tokenizer, rows, context_length(rm)),
        gold=torch.tensor(
            [
                [judge.score(r["prompt_id"], t) for t in c]
                for r, c in zip(test, candidates, strict=True)
            ]
        ),
    )


def win_rate_of_choice(cands: Candidates, choice: list[int], labelers: LabelerPool) -> dict:
    """Held-out labelers' win rate of each prompt's chosen candidate against its references."""
    per_prompt = []
    for pid, texts, refs, pick in zip(
        cands.prompt_ids, cands.texts, cands.references, choice, strict=True
    ):
        verdicts = [labelers.compare(pid, texts[pick], ref) for ref in refs]
        per_prompt.append(sum(verdicts) / len(verdicts))
    return mean_with_ci(per_prompt)


def best_of_n_table(cands: Candidates, ns: list[int], profile_dir: Path, seed: int) -> list[dict]:
    """For each n and selector (rm, gold): mean gold of the choice and its win rate vs SFT."""
    judge = GoldJudge.load(profile_dir)
    table = []
    for n in ns:
        for selector, scores in (("rm", cands.rm), ("gold", cands.gold)):
            choice = best_of_first(scores, n)
            labelers = LabelerPool.load(profile_dir, "heldout", judge, seed)
            gold = cands.gold[torch.arange(len(choice)), torch.tensor(choice)]
            table.append(
                {
                    "n": n,
                    "selector": selector,
                    "gold": float(gold.mean()),
                    "win_rate_vs_sft": win_rate_of_choice(cands, choice, labelers),
                }
            )
    return table
