"""Options SFT and reward-model training share: batch size, LoRA adapters, precision, compilation, gradient checkpointing.

Declared once here (`SupervisedOptions`, the base of both stage configs), so
the run form and a params file spell them the same way under each stage.
The adapter settings themselves are `instructflow.models.lora_options.LoraOptions`;
precision and torch_compile are `instructflow.models.runtime_fields`'s, precision shared
with PPO. Pydantic only, as the stage configs built on it (flows/params.py imports them).
"""

from pydantic import BaseModel, ConfigDict, Field

from instructflow.models.lora_options import LoraOptions
from instructflow.models.runtime_fields import Precision, precision_field, torch_compile_field


class SupervisedOptions(BaseModel):
    """Settings of a supervised training stage that do not depend on which one it is."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batch_size: int = Field(
        16,
        ge=1,
        description="Examples per step: demonstrations for SFT (length-bucketed to save padding); prompts, each with its K responses and their C(K,2) pairs, for the reward model.",
    )
    lora: LoraOptions | None = Field(
        None,
        description="LoRA adapters for this stage (null: full fine-tuning). Checkpoints are saved with the adapters merged: plain Hugging Face models.",
    )
    precision: Precision = precision_field()
    torch_compile: bool = torch_compile_field()
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute activations in the backward pass to save memory (SFT and RM; PPO trains in eval mode, where Hugging Face models do not checkpoint).",
    )


__all__ = ["LoraOptions", "Precision", "SupervisedOptions"]
