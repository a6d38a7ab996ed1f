"""Stage functions run with one process and under `accelerate launch` by tests/tasks/test_processes.py."""

from pathlib import Path

from instructflow.models.distributed import main_process
from instructflow.tasks import layout
from instructflow.tasks.reward_model import RewardModelConfig, train_reward_model
from instructflow.tasks.sft import SFTConfig, finetune

# Global batches that do not split evenly: SFT's 5 examples are 3 + 2 per process (unequal
# token counts too); the reward model's 3 prompts are 2 + 1, and each epoch's last batch
# holds a single prompt, so the second process trains on nothing there (weight 0).
SFT = SFTConfig(epochs=3, lr=1e-3, batch_size=5, checkpoint_every=1000)
RM = RewardModelConfig(epochs=2, lr=1e-3, batch_size=3, checkpoint_every=1000)


def supervised(world: dict, out: Path, log) -> dict | None:
    """SFT's and the reward model's every train loss and validation figures, from rank 0."""
    records: dict[str, list] = {"sft": [], "sft_valid": [], "rm": [], "rm_valid": []}

    def recorder(stage: str):
        def record(step: int, metrics: dict) -> None:
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
