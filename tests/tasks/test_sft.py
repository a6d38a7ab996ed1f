"""SFT's checkpoint choice when a dataset gives it no validation demonstrations."""

import json
import math
from pathlib import Path

from instructflow.tasks.dataset import load_dataset
from instructflow.tasks.dataset_layout import write_layout
from instructflow.tasks.sft import SFTConfig, finetune
from instructflow.world import layout
from tests.own_data import write_pairwise_dataset
from tests.tiny_models import tiny_llama


def test_without_validation_demonstrations_the_last_epoch_is_kept(tmp_path):
    # given stated splits, and demonstrations of the training prompts only
    folder = write_pairwise_dataset(tmp_path / "pw", n=60)
    (folder / "prompts.jsonl").unlink()
    rows = [json.loads(line) for line in (folder / "preferences.jsonl").read_text().splitlines()]
    splits = ["test" if i < 10 else ("valid" if i < 16 else "train") for i in range(len(rows))]
    rows = [r | {"split": s} for r, s in zip(rows, splits, strict=True)]
    (folder / "preferences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    demos = [
        {"prompt": r["prompt"], "response": r["chosen"]} for r in rows if r["split"] == "train"
    ]
    (folder / "demonstrations.jsonl").write_text("".join(json.dumps(d) + "\n" for d in demos))
    data = tmp_path / "layout"
    write_layout(load_dataset(folder), data)
    assert (data / layout.SFT_VALID).read_text() == ""  # SFT sees no validation rows
    model = tiny_llama(tmp_path / "llama", [d["prompt"] + " " + d["response"] for d in demos])
    # when SFT trains 3 epochs
    epochs, logged = [], []

    def log(step, metrics, total, kind):
        if kind == "epoch":
            epochs.append(step)
            logged.extend(metrics)

    cfg = SFTConfig(epochs=3, lr=1e-3, batch_size=8)
    args = (model, data / layout.SFT_TRAIN, data / layout.SFT_VALID, "demonstrations", cfg, 0)
    result = finetune(*args, tmp_path / "sft", log)
    # then the last epoch is kept (every epoch's validation loss was 0, and the lowest was
    # the first), and no validation loss is claimed for it
    assert len(epochs) == 3 and result["best_epoch"] == epochs[-1]
    assert math.isnan(result["best_valid_loss"])
    assert "valid_loss" not in logged  # nor for any epoch (MLflow showed 0 for each)
    assert Path(tmp_path / "sft" / "model").is_dir()
    # and its peak memory is recorded twice: its own, and its process's whole (the more)
    assert result["process_peak_memory_mb"] > result["peak_memory_mb"] >= 0
