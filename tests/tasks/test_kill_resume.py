"""kill -9 at a random point of a training stage, then run it again: it resumes and ends as if never killed.

Each training loop (base-model pretraining, SFT and the FLAN/T0 baselines,
which share SFT's function, the reward model) runs its plain stage function
in a forked child process with a checkpoint every few steps; the test SIGKILLs it at a
random moment after a randomly chosen checkpoint (possibly mid-write of the
next one), runs the function again on the same folder, and compares the
result with an uninterrupted run: same weights, same metrics, and only the
steps after the checkpoint were trained again. PPO's resume has its own test
in test_ppo_stage.py. The random choices print their seed; set
INSTRUCTFLOW_KILL_SEED to replay one.
"""

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import instructflow.models.lm_training
import instructflow.tasks.reward_model
from instructflow.models.checkpoints import CheckpointStore
from instructflow.tasks import checkpoints, comparisons
from instructflow.tasks.base_model import BaseModelConfig, build_base_model
from instructflow.tasks.reward_model import RewardModelConfig, train_reward_model
from instructflow.tasks.sft import SFTConfig, finetune
from instructflow.tasks.tables import write_jsonl
from instructflow.world import layout
from tests.models.test_lm import CORPUS, save_tiny_checkpoint

WORDS = ["stone", "apple", "tarn", "velm", "orsk", "bex", "owl", "reed"]
EVERY = 3  # steps between checkpoints in these tests

pytestmark = pytest.mark.usefixtures("one_thread")


def make_world(root: Path) -> dict[str, str]:
    """A profile folder and comparison tables small enough to train on in seconds, and a tiny base model."""
    profile, comps = root / "profile", root / "comparisons"
    docs = [{"doc_id": f"d{i}", "text": t} for i, t in enumerate(CORPUS * 3)]
    write_jsonl(profile / layout.PRETRAIN_TRAIN, docs)
    write_jsonl(profile / layout.PRETRAIN_VALID, docs[:8])
    demos = [
        {"prompt_id": f"p{i}", "prompt": f"reverse the word {w}", "response": w[::-1]}
        for i, w in enumerate(WORDS * 2)
    ]
    write_jsonl(profile / layout.SFT_TRAIN, demos)
    mixture = [
        {"example_id": f"m{i}", "family": "reverse", "prompt": f"Reverse: {w}", "response": w[::-1]}
        for i, w in enumerate(WORDS * 6)
    ]
    write_jsonl(profile / layout.FLAN_MIXTURE, mixture)
    write_jsonl(
        profile / layout.EVAL_TEST, [{"prompt_id": f"h{i}", "family": "reverse"} for i in range(8)]
    )
    rng = random.Random(0)

    def rows(prefix: str, n: int) -> list[dict]:
        out = []
        for i in range(n):
            word = WORDS[i % len(WORDS)]
            ranking = list(range(4))
            rng.shuffle(ranking)
            out.append(
                {
                    "prompt_id": f"{prefix}{i}",
                    "prompt": f"reverse the word {word}",
                    "responses": [word[::-1], word, "I do not know.", word[::-1] + "s"],
                    "ranking": ranking,
                }
            )
        return out

    write_jsonl(comps / comparisons.TRAIN, rows("c", 40))
    write_jsonl(comps / comparisons.VALID, rows("v", 8))
    write_jsonl(comps / comparisons.HELDOUT, rows("h", 8))
    write_jsonl(comps / comparisons.HELDOUT_GOLD, [{"golds": [1.0, 0.2, 0.1, 0.5]}] * 8)
    base = save_tiny_checkpoint("gpt2", root / "base")
    return {"profile": str(profile), "comparisons": str(comps), "base": str(base)}


def _noop(_step: int, _metrics: dict, *_progress) -> None:
    pass


def _base_model(world: dict, out: Path) -> dict:
    cfg = BaseModelConfig(
        vocab_size=320, n_layer=2, n_head=2, n_embd=32, n_positions=64,
        block_size=16, steps=45, batch_size=4, checkpoint_every=EVERY,
    )  # fmt: skip
    metrics = build_base_model(Path(world["profile"]), None, cfg, 0, out, _noop)
    return {
        k: v for k, v in metrics.items() if k in ("pretrain/valid_perplexity", "pretrain/params")
    }


def _sft(world: dict, out: Path) -> dict:
    # The FLAN-style mixture: the same function trains SFT, FLAN and T0.
    cfg = SFTConfig(epochs=3, lr=1e-3, batch_size=4, checkpoint_every=EVERY)
    table = Path(world["profile"]) / layout.FLAN_MIXTURE
    return finetune(Path(world["base"]), table, None, "mixture", cfg, 0, out, _noop)


def _reward_model(world: dict, out: Path) -> dict:
    cfg = RewardModelConfig(epochs=2, lr=1e-3, batch_size=4, checkpoint_every=EVERY)
    args = (Path(world["base"]), Path(world["comparisons"]), Path(world["profile"]))
    return train_reward_model(*args, cfg, 0, out, _noop)


STAGES = {"base_model": _base_model, "sft": _sft, "reward_model": _reward_model}


def run_stage(stage: str, world: dict, out: Path) -> dict:
    """The stage's metrics and a digest of the weights it kept."""
    # Wall time and peak memory depend on the machine and the process, not on the training.
    metrics = {
        k: v
        for k, v in STAGES[stage](world, out).items()
        if not any(m in k for m in ("peak_memory", "seconds", "per_second"))
    }
    weights = load_file(str(out / "model" / "model.safetensors"))
    return {"metrics": metrics, "weights": {k: weights[k] for k in sorted(weights)}}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, str]:
    return make_world(tmp_path_factory.mktemp("kill-world"))


def count_steps(monkeypatch) -> list[int]:
    """Record the step index of every optimizer step the loops take."""
    steps: list[int] = []
    real = instructflow.models.lm_training.guarded_step

    def counting(*args):
        steps.append(args[-1])
        return real(*args)

    monkeypatch.setattr(instructflow.models.lm_training, "guarded_step", counting)
    monkeypatch.setattr(instructflow.tasks.reward_model, "guarded_step", counting)
    return steps


def kill_at_random_point(stage: str, world: dict, out: Path, rng: random.Random) -> int:
    """Start the stage in a subprocess, SIGKILL it a random moment after a random checkpoint; return that checkpoint's step.

    The moment is a random fraction of the time the loop took between its two previous
    checkpoints, so the kill falls before the next checkpoint is done or during its
    write, however fast the machine (a fixed delay outlasted the whole stage).
    """
    target = EVERY * rng.randint(2, 4)
    fraction = rng.uniform(0.0, 1.0)
    # A forked child starts with everything imported (a fresh interpreter spends
    # ~15 s of CPU importing torch, transformers, Prefect and MLflow).
    proc = multiprocessing.get_context("fork").Process(target=run_stage, args=(stage, world, out))
    proc.start()
    store = CheckpointStore(out / checkpoints.RESUME, EVERY)
    seen: dict[int, float] = {}  # checkpoint step -> when it was first seen
    deadline = time.monotonic() + 180
    try:
        while max(seen, default=0) < target:
            assert proc.is_alive(), (
                f"{stage} ended before step {target} (exit code {proc.exitcode})"
            )
            assert time.monotonic() < deadline, f"no checkpoint at step {target} within 180 s"
            for path in store.checkpoints():
                seen.setdefault(int(path.name.split("-")[1]), time.monotonic())
            time.sleep(0.002)
        newest, previous = sorted(seen)[-1], sorted(seen)[-2] if len(seen) > 1 else 0
        interval = (seen[newest] - seen.get(previous, seen[newest])) * EVERY / (newest - previous)
        time.sleep(fraction * interval)
        assert proc.is_alive(), f"{stage} finished before it could be killed; lower the target"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
    assert proc.exitcode == -signal.SIGKILL
    return target


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_a_stage_killed_at_a_random_point_resumes_and_ends_like_an_uninterrupted_run(
    stage, world, tmp_path, monkeypatch
):
    seed = int(os.environ.get("INSTRUCTFLOW_KILL_SEED", random.randrange(10**6)))
    print(f"kill seed {seed} (INSTRUCTFLOW_KILL_SEED={seed} replays it)")
    # given a run of the stage killed with SIGKILL at a random point after a random checkpoint
    out = tmp_path / "killed"
    target = kill_at_random_point(stage, world, out, random.Random(seed))
    saved = CheckpointStore(out / checkpoints.RESUME, EVERY).load()
    if saved is None:
        # A kill after training had ended: the stage had saved its model and dropped its
        # checkpoints, so a run again starts afresh (any other lost checkpoint is a bug).
        assert (out / "model" / "model.safetensors").exists(), "checkpoints lost before the end"
        saved = {"step": 0}
    else:
        assert saved["step"] >= target
    # when the stage function runs again on the same folder, as the pipeline would (prepare keeps it)
    checkpoints.prepare_out_dir(out)
    steps = count_steps(monkeypatch)
    resumed = run_stage(stage, world, out)
    resumed_steps = list(steps)
    steps.clear()
    reference = run_stage(stage, world, tmp_path / "clean")
    # then it trained exactly the steps after its newest checkpoint (none when the kill came
    # after the last step's checkpoint, while the stage was validating or saving)
    assert steps == list(range(len(steps))) and steps
    assert resumed_steps == steps[saved["step"] :]
    # and it ends exactly where an uninterrupted run ends: same weights, same metrics
    assert resumed["metrics"] == reference["metrics"]
    assert resumed["weights"].keys() == reference["weights"].keys()
    assert all(
        torch.equal(resumed["weights"][k], reference["weights"][k]) for k in reference["weights"]
    )
