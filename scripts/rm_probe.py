"""Where does the reward model judge well, and where does the SFT network know better?

For a finished run, per task family, on the evaluation's samples of each
policy (test users' prompts): how often a score orders two responses to the
same family the way the gold preference does. Two scores are compared:
- the reward model's score (what PPO climbs);
- the SFT policy's own log-likelihood of the response (what it "knows").

Why it exists: on tiny, PPO stalls at a win rate of about 0.62. This probe
showed why: the RM orders refusals, "I don't know" and padding almost
perfectly, but right against wrong answers to add/larger/last_word/reverse/
sort barely better than chance, while the SFT network it was built from
ranks those answers well when asked generatively. It is a diagnosis, not a
stage: nothing here feeds training.

    python scripts/rm_probe.py                      # newest stage outputs under runs/
    python scripts/rm_probe.py --policies sft ppo ppo_ptx
"""

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from instructflow.models.lm import context_length, load_causal_lm  # noqa: E402
from instructflow.models.reward_model import reward_model_from_causal_lm  # noqa: E402
from instructflow.models.sampling import text_response_logprobs  # noqa: E402
from instructflow.tasks.reward_model import accuracy_vs_scores, score_rows  # noqa: E402
from instructflow.tasks.tables import read_jsonl  # noqa: E402
from instructflow.world import layout  # noqa: E402

# Gold differences below this are "the same answer, a word more or less": not counted.
MIN_GOLD_GAP = 0.05


def newest_stage_dir(runs: Path, stage: str) -> Path:
    """The most recently finished output folder of `stage` (it has a DONE.json)."""
    done = sorted((runs / stage).glob("*/DONE.json"), key=lambda p: p.stat().st_mtime)
    if not done:
        raise SystemExit(f"no finished {stage} stage under {runs / stage}: run the pipeline first")
    return done[-1].parent


# The SFT network's own likelihood of a response, from text (shared with the evaluation).
response_loglik = text_response_logprobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs")
    parser.add_argument("--profile", type=Path, default=ROOT / "data" / "tiny")
    parser.add_argument("--policies", nargs="+", default=["sft", "ppo"])
    args = parser.parse_args()

    sft, sft_tokenizer = load_causal_lm(newest_stage_dir(args.runs, "sft") / "model")
    rm, rm_tokenizer = reward_model_from_causal_lm(
        newest_stage_dir(args.runs, "reward_model") / "model"
    )
    responses_dir = newest_stage_dir(args.runs, "evaluation") / "responses"
    family_of = {r["prompt_id"]: r["family"] for r in read_jsonl(args.profile / layout.EVAL_TEST)}

    for policy in args.policies:
        rows = read_jsonl(responses_dir / f"{policy}.jsonl")
        prompts = [r["prompt"] for r in rows]
        texts = [r["response"] for r in rows]
        rm_score = score_rows(
            rm,
            rm_tokenizer,
            [{"prompt": p, "responses": [t]} for p, t in zip(prompts, texts, strict=True)],
            context_length(rm),
        ).flatten()
        loglik = response_loglik(sft, sft_tokenizer, prompts, texts)
        by_family = defaultdict(list)
        for i, row in enumerate(rows):
            by_family[family_of[row["prompt_id"]]].append(i)
        print(f"\n{policy}: pairwise accuracy against gold, within each family")
        print(f"{'family':14s} {'n':>4s} {'gold':>5s} {'RM':>5s} {'SFT loglik':>10s}")
        for family, idx in sorted(by_family.items()):
            gold = torch.tensor([rows[i]["gold"] for i in idx])
            rm_acc = accuracy_vs_scores(rm_score[idx], gold, MIN_GOLD_GAP)
            loglik_acc = accuracy_vs_scores(loglik[idx], gold, MIN_GOLD_GAP)
            print(f"{family:14s} {len(idx):4d} {gold.mean():5.2f} {rm_acc:5.2f} {loglik_acc:10.2f}")


if __name__ == "__main__":
    main()
