"""Stage functions run with one process and under `accelerate launch` by tests/tasks/test_processes.py."""

import os
from pathlib import Path

from instructflow.models.distributed import main_process
from instructflow.models.lm import load_causal_lm
from instructflow.models.lm_training import OptimConfig, pack_corpus, pretrain
from instructflow.models.ppo import PPOTrainer
from instructflow.models.ppo_config import PPOHyper
from instructflow.models.ppo_loop import ppo_train
from instructflow.models.reward_model import reward_model_from_causal_lm
from instructflow.tasks.reward_model import RewardModelConfig, train_reward_model
from instructflow.tasks.sft import SFTConfig, finetune
from instructflow.world import layout
from tests.models.test_lm import CORPUS
from tests.tasks.test_kill_resume import WORDS

# Global batches that do not split evenly: SFT's 5 examples are 3 + 2 per process (unequal
# token counts too); the reward model's 3 prompts are 2 + 1, and each epoch's last batch
# holds a single prompt, so the second process trains on nothing there (weight 0).
SFT = SFTConfig(epochs=3, lr=1e-3, batch_size=5, checkpoint_every=1000)
RM = RewardModelConfig(epochs=2, lr=1e-3, batch_size=3, checkpoint_every=1000)


def supervised(world: dict, out: Path, log) -> dict | None:
    """SFT's and the reward model's every train loss and validation figures, from rank 0."""
    records: dict[str, list] = {"sft": [], "sft_valid": [], "rm": [], "rm_valid": []}

    def recorder(stage: str):
        def record(step: int, metrics: dict, *_progress) -> None:
            if "train_loss" in metrics:
                records[stage].append((step, metrics["train_loss"]))
            else:
                records[stage + "_valid"].append((step, metrics))

        return record

    table = Path(world["profile"]) / layout.FLAN_MIXTURE
    sft = finetune(
        Path(world["base"]), table, None, "mixture", SFT, 0, out / "sft", recorder("sft"), 1
    )
    rm = train_reward_model(
        Path(world["base"]),
        Path(world["comparisons"]),
        Path(world["profile"]),
        RM,
        0,
        out / "rm",
        recorder("rm"),
        log_every=1,
    )
    return {"records": records, "sft": sft, "rm": rm} if main_process() else None


# PPO: 9 rollouts are 5 + 4 per process; minibatches of 4 straddle the two shards or
# fall in one (the other process then steps on a stand-in row of weight 0); 3 pretraining
# rows per step are 2 + 1; the adaptive KL controller and the running reward
# normaliser see the whole batch.
PPO = PPOHyper(
    iterations=3,
    rollout_batch=9,
    minibatch_size=4,
    ppo_epochs=2,
    lr=3e-3,
    value_lr=1e-3,
    max_new_tokens=8,
    reference_samples=9,
    reward_normalization="running",
    adaptive_kl=True,
    kl_horizon=50,
    target_kl=0.15,  # near the KL reached: the controller's step is not clipped
    ptx_batch_size=3,
)
PROMPTS = [f"reverse the word {w}" for w in WORDS] + [f"what is {a} + 3?" for a in range(6)]


def ppo(sft_dir: Path, rm_dir: Path, log) -> list[dict] | None:
    """The metrics of PPO-ptx's first iterations, each row sampled from its own seed (row_seeded)."""
    policy, tokenizer = load_causal_lm(sft_dir)
    ref, _ = load_causal_lm(sft_dir)
    value, _ = reward_model_from_causal_lm(rm_dir)
    reward, rm_tokenizer = reward_model_from_causal_lm(rm_dir)
    trainer = PPOTrainer(
        policy,
        ref,
        value,
        reward,
        tokenizer,
        rm_tokenizer,
        PPO,
        ptx_gamma=0.1,
        seed=3,
        row_seeded=True,
    )
    blocks = pack_corpus(tokenizer, CORPUS * 4, 16)
    seen: list[dict] = []

    def gold(indices: list[int], texts: list[str]) -> float:  # a stand-in judge: any per-row score
        return sum(len(t) + i for i, t in zip(indices, texts, strict=True)) / len(texts)

    ppo_train(trainer, PROMPTS, blocks, lambda i, m: seen.append(m), monitor=gold)
    return seen if main_process() else None


def pretraining(base_dir: Path) -> list[tuple[int, float]]:
    """The base model's pretraining losses: 5 packed blocks per step are 3 + 2 per process."""
    model, tokenizer = load_causal_lm(base_dir)
    losses: list[tuple[int, float]] = []
    pretrain(
        model,
        pack_corpus(tokenizer, CORPUS * 4, 16),
        20,
        OptimConfig(lr=1e-3, batch_size=5),
        seed=0,
        on_log=lambda step, metrics, *_: losses.append((step, metrics["loss"])),
        log_every=1,
    )
    return losses


def all_stages(world: dict, rm_dir: Path, out: Path, log) -> dict | None:
    """One launch for every stage the tests compare (a launch costs seconds of start-up)."""
    supervised_result = supervised(world, out, log)
    ppo_result = ppo(Path(world["base"]), rm_dir, log)
    pretrain_losses = pretraining(Path(world["base"]))
    if not main_process():
        return None
    supervised_result["records"]["pretrain"] = pretrain_losses
    world_seen = {"size": int(os.environ.get("WORLD_SIZE", "1")), "backend": _backend()}
    return {**supervised_result, "ppo": ppo_result, "world": world_seen}


def _backend() -> str | None:
    import torch.distributed

    return torch.distributed.get_backend() if torch.distributed.is_initialized() else None


def uneven_forwards(log) -> dict | None:
    """Each process makes its own number of forward passes before each backward, as PPO does
    over the length groups of its shard, on a Qwen2 (its rotary table is a buffer)."""
    import datetime

    import torch
    import torch.distributed as dist
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from instructflow.models.runtime import make_accelerator

    if not dist.is_initialized():  # a deadlock fails within a minute instead of hanging
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    accelerator = make_accelerator()
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=16,
    )  # fmt: skip
    model = Qwen2ForCausalLM(config)
    assert any(True for _ in model.buffers())  # what DDP broadcast at every forward
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    rank = accelerator.process_index
    for step in range(3):
        passes = 1 + rank + step  # rank 0: 1, 2, 3 passes; rank 1: 2, 3, 4
        loss = sum(
            model(input_ids=torch.tensor([[1, 2, 3 + k]])).logits.mean() for k in range(passes)
        )
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
    weights = [p.detach().clone() for p in model.parameters()]
    gathered = [None] * accelerator.num_processes
    dist.all_gather_object(gathered, [w.sum().item() for w in weights])
    return {"weights_equal": gathered[0] == gathered[1]} if main_process() else None


def sleep_a_minute(log) -> None:
    """A stage that outlives the test's patience: its processes must end with their parent."""
    import time

    time.sleep(60)
