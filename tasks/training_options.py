"""Options every training stage shares: LoRA adapters, precision, gradient checkpointing.

Declared once here, used by the SFT, reward-model and PPO configs, so the
run form and a params file spell them the same way under each stage.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from models.lora import LoraSpec
from models.runtime import Precision


class LoraOptions(BaseModel):
    """LoRA adapters (peft): train low-rank updates instead of every weight."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    r: int = Field(8, ge=1, description="Rank of each adapter's update matrix.")
    alpha: int = Field(16, ge=1, description="Adapter scale: updates are multiplied by alpha / r.")
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="Dropout on the adapters' input (0 keeps PPO exact)."
    )
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        None,
        description='Modules to adapt by name; null: peft\'s default for the architecture (GPT-2: c_attn; Llama: q_proj, v_proj); "all-linear": every linear layer but the output.',
    )

    def spec(self) -> LoraSpec:
        targets = self.target_modules
        return LoraSpec(
            r=self.r,
            alpha=self.alpha,
            dropout=self.dropout,
            target_modules=tuple(targets) if isinstance(targets, list) else targets,
        )


def lora_field():
    return Field(
        None,
        description="LoRA adapters for this stage (null: full fine-tuning). Checkpoints are saved with the adapters merged: plain Hugging Face models.",
    )


def precision_field():
    return Field(
        "fp32",
        description="fp32, or mixed precision: bf16 / fp16 autocast with fp32 weights (fp16 is for CUDA; on CPU use bf16).",
    )


def checkpointing_field():
    return Field(
        False,
        description="Recompute activations in the backward pass to save memory (SFT and RM; PPO trains in eval mode, where Hugging Face models do not checkpoint).",
    )


__all__ = [
    "LoraOptions",
    "Precision",
    "checkpointing_field",
    "lora_field",
    "precision_field",
]
