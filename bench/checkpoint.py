"""The checkpoints the benchmarks run on: the embedded world's data, an SFT GPT-2 and its RM.

Built once per (profile, seed) through the stages' plain functions (no
Prefect, no MLflow, no hub: the tokenizer and the GPT-2 are made here from
config) and cached under bench/.cache/<code key>/ (git-ignored). The key digests the
code that makes them (the stages' modules and every project module they import,
and this file, whose settings they use): checkpoints made by code that has
changed since are not reused but rebuilt, and their folder removed. Before,
checkpoints stayed whatever code had made them, so a bench could measure today's
PPO on last week's SFT and RM. Training is shortened
against the pipeline's defaults: the benchmarks need a policy that answers
in the task format and a reward model that tells answers apart, not the
best ones the pipeline can make.

    python bench/checkpoint.py            # build (or find) the cached checkpoints

`untrained()` is the cheap alternative for a machine too busy to train: a
tiny-profile-sized GPT-2 and BPE tokenizer from config, and an RM that is
the same trunk with a fresh head. Responses then run to the length limit
(the slowest case), and the gold score says nothing.
"""

import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CACHE = ROOT / "bench" / ".cache"

# Shorter than the tiny profile's defaults (600 pretraining steps, 16 SFT epochs,
# 2 RM epochs): about 3 minutes on two quiet cores instead of 8.
BASE = {"steps": 300}
SFT = {"epochs": 6}
RM = {"epochs": 1}


# The stages the checkpoints are made by (through their plain functions).
MADE_BY = (
    "instructflow.tasks.data",
    "instructflow.tasks.base_model",
    "instructflow.tasks.sft",
    "instructflow.tasks.comparisons",
    "instructflow.tasks.reward_model",
)


@dataclass(frozen=True)
class BenchCheckpoints:
    profile_dir: Path
    """The world's tables (prompts, gold key) for the profile."""
    sft: Path
    """SFT policy (GPT-2 from config + locally trained BPE tokenizer)."""
    rm: Path
    """Reward model trained on the SFT policy's ranked samples."""


def code_key() -> str:
    """Digest of the code the checkpoints are made by: MADE_BY's modules, every project module
    they import, and this file."""
    from instructflow.tasks.code_closure import import_closure_digest

    digest = hashlib.sha256(import_closure_digest(*MADE_BY).encode())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def current(cache: Path = CACHE) -> Path:
    """The cache's folder for today's code; folders made by other code are removed."""
    key = code_key()
    for stale in cache.glob("*") if cache.is_dir() else []:
        if stale.is_dir() and stale.name != key:
            print(f"[bench] removing checkpoints made by other code: {stale}", flush=True)
            shutil.rmtree(stale)
    return cache / key


def build(profile: str = "tiny", seed: int = 0, cache: Path = CACHE) -> BenchCheckpoints:
    """Data and checkpoints for `profile`, built on first use and reused while the code that
    makes them is unchanged."""
    from instructflow.tasks import base_model, comparisons, reward_model, sft
    from instructflow.tasks.data import write_profile
    from instructflow.world import layout

    work = current(cache) / f"{profile}-seed{seed}"
    data = work / "data"
    if not (data / layout.PPO_TRAIN).exists():
        write_profile(data, profile, seed)
    log = _logger(work / "log.jsonl")
    stages = {}
    if not (work / "base" / "model").exists():
        cfg = base_model.BaseModelConfig(**BASE)
        stages["base"] = _timed(
            base_model.build_base_model, data, None, cfg, seed, work / "base", log
        )
    if not (work / "sft" / "model").exists():
        stages["sft"] = _timed(
            sft.finetune,
            work / "base" / "model",
            data / layout.SFT_TRAIN,
            data / layout.SFT_VALID,
            "demonstrations",
            sft.SFTConfig(**SFT),
            seed,
            work / "sft",
            log,
        )
    if not (work / "comparisons" / comparisons.HELDOUT_GOLD).exists():
        (work / "comparisons").mkdir(parents=True, exist_ok=True)
        stages["comparisons"] = _timed(
            comparisons.collect,
            work / "sft" / "model",
            data,
            comparisons.ComparisonsConfig(),
            seed,
            work / "comparisons",
        )
    if not (work / "rm" / "model").exists():
        (work / "rm").mkdir(parents=True, exist_ok=True)
        stages["rm"] = _timed(
            reward_model.train_reward_model,
            work / "sft" / "model",
            work / "comparisons",
            data,
            reward_model.RewardModelConfig(**RM),
            seed,
            work / "rm",
            log,
        )
    if stages:
        (work / "build.json").write_text(json.dumps(stages, indent=1, default=str))
    return BenchCheckpoints(data, work / "sft" / "model", work / "rm" / "model")


def untrained(
    profile: str = "tiny", seed: int = 0, cache: Path = CACHE, size=None
) -> BenchCheckpoints:
    """The world's data and an untrained GPT-2 as SFT and RM: the tiny profile's size (4 x
    128) unless `size` (a GPT2Size) says otherwise."""
    from instructflow.models.lm import GPT2Size, build_gpt2, save_model
    from instructflow.models.tokenizer import train_tokenizer
    from instructflow.tasks.base_model import tokenizer_texts
    from instructflow.tasks.data import write_profile
    from instructflow.world import layout

    size = size or GPT2Size()
    shape = "" if size == GPT2Size() else f"-{size.n_layer}x{size.n_embd}"
    folder = current(cache)
    work = folder / f"{profile}-seed{seed}-untrained{shape}"
    data = folder / f"{profile}-seed{seed}" / "data"
    if not (data / layout.PPO_TRAIN).exists():
        write_profile(data, profile, seed)
    model_dir = work / "sft" / "model"
    if not model_dir.exists():
        tokenizer = train_tokenizer(tokenizer_texts(data), vocab_size=1024)
        model = build_gpt2(tokenizer, size, seed=seed)
        save_model(model, tokenizer, model_dir)
    return BenchCheckpoints(data, model_dir, model_dir)


def _timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    print(f"[bench] {fn.__module__}.{fn.__name__}: {time.perf_counter() - start:.0f} s", flush=True)
    return result


def _logger(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)

    def log(step: int, metrics: dict, *_progress) -> None:
        with open(path, "a") as fh:
            fh.write(json.dumps({"step": step, **metrics}) + "\n")

    return log


if __name__ == "__main__":
    import torch

    torch.set_num_threads(2)
    print(untrained() if "--untrained" in sys.argv else build())
