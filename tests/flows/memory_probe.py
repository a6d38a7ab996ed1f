"""Run one training stage's plain function in this process and print its peak RSS (JSON).

`python -m tests.flows.memory_probe STAGE SPEC.json`; used by test_plan_measured
so that each stage is measured in a process of its own. The peak is the
process's VmHWM after the stage modules were imported, reset at the start of
the stage (instructflow.models.runtime.PeakMemory): interpreter and libraries included.
"""

import json
import sys
from pathlib import Path

from instructflow.models.runtime import peak_rss_bytes
from instructflow.tasks.ppo import run_ppo
from instructflow.tasks.ppo_config import PPOStageConfig
from instructflow.tasks.reward_model import RewardModelConfig, train_reward_model
from instructflow.tasks.sft import SFTConfig, finetune
from instructflow.world import layout


def main(stage: str, spec: dict) -> None:
    out, profile = Path(spec["out"]), Path(spec["profile"])
    out.mkdir(parents=True, exist_ok=True)
    quiet = lambda *_: None  # noqa: E731
    if stage == "sft":
        finetune(
            Path(spec["model"]), profile / layout.SFT_TRAIN, profile / layout.SFT_VALID,
            "demonstrations", SFTConfig(**spec["cfg"]), 0, out, quiet,
        )  # fmt: skip
    elif stage == "reward_model":
        train_reward_model(
            Path(spec["sft"]), Path(spec["comparisons"]), profile,
            RewardModelConfig(**spec["cfg"]), 0, out, quiet,
        )  # fmt: skip
    else:
        run_ppo(
            "ppo", Path(spec["sft"]), Path(spec["rm"]), profile,
            PPOStageConfig(**spec["cfg"]), 0.0, 0, out, quiet,
        )  # fmt: skip
    print(json.dumps({"peak_rss": peak_rss_bytes()}))


if __name__ == "__main__":
    main(sys.argv[1], json.loads(Path(sys.argv[2]).read_text()))
