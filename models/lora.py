"""LoRA adapters (Hugging Face `peft`) for the training stages.

How the stages use them, and why this way round:
- `add_lora` wraps a model in a `PeftModel`. The stages keep training the
  *inner* Hugging Face model (`peft_model.get_base_model()`): peft injects
  the adapter layers into it in place, so its forward already includes them,
  and every existing reader (`model.generate`, `model.base_model`,
  `model.score`, `model.config`) keeps working unchanged.
- The `PeftModel` is kept beside it for what only peft knows:
  `disable_adapter()` (PPO's frozen SFT reference is the policy with its
  adapters switched off, and the frozen reward model is the value model with
  its adapters off: no second copy of either network) and
  `merge_and_unload()` (a saved or registered checkpoint is a plain
  Hugging Face model that needs no peft to load).
- For a reward model (`task="reward"`, peft's SEQ_CLS), peft also trains a
  full copy of the new `score` head (`modules_to_save`); with adapters
  disabled the original head is read again.
"""

import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Literal

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel

from instructflow.models.lora_options import LoraOptions

Task = Literal["causal_lm", "reward"]
_PEFT_TASK = {"causal_lm": "CAUSAL_LM", "reward": "SEQ_CLS"}


def unmatched_targets(module_names: list[str], targets: list[str]) -> list[str]:
    """The names in `targets` that name no module, by peft's rule for a list of names: a
    module matches a name when its dotted path is the name or ends with "." + the name."""
    return [t for t in targets if not any(n == t or n.endswith("." + t) for n in module_names)]


def add_lora(model: PreTrainedModel, options: LoraOptions, task: Task, seed: int = 0) -> PeftModel:
    """Freeze `model` and give it trainable adapters; returns the PeftModel (the network is
    `peft_model.get_base_model()`, the same object as `model`, now carrying adapters).

    The adapters' random initialisation comes from `seed`, not from whatever
    the process drew before: a stage gives the same adapters whichever stages
    ran before it in the process, and in every process of an `accelerate launch`.
    """
    targets = options.target_modules
    config = LoraConfig(
        task_type=_PEFT_TASK[task],
        r=options.r,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=list(targets) if isinstance(targets, list) else targets,
    )
    with torch.random.fork_rng(devices=[]), _quiet_peft():
        torch.manual_seed(seed)
        return get_peft_model(model, config)


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """What an optimizer should see: with adapters, only they (and a new head) train."""
    return [p for p in model.parameters() if p.requires_grad]


def trainable_fraction(model: torch.nn.Module) -> float:
    """Trainable parameters / all parameters (1.0 for full fine-tuning)."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in trainable_parameters(model)) / max(1, total)


def adapters_off(peft_model: PeftModel | None) -> AbstractContextManager:
    """Run the network as it was before the adapters (a no-op context without adapters)."""
    return peft_model.disable_adapter() if peft_model is not None else nullcontext()


def merged(peft_model: PeftModel) -> PreTrainedModel:
    """The plain Hugging Face model with the adapters folded into its weights (in place)."""
    return peft_model.merge_and_unload()


def merge_saved_adapter(model: PreTrainedModel, adapter_dir: str | Path) -> PreTrainedModel:
    """`model` (as it was before training) plus the adapter saved in `adapter_dir`, merged."""
    with _quiet_peft():
        return PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()


@contextmanager
def _quiet_peft() -> Iterator[None]:
    """Wrapping a model in a PeftModel, without the warnings (with a site-packages path) it
    prints in every LoRA stage's log about nothing the user can change: peft reads
    `is_gradient_checkpointing`, which transformers 5 deprecates (a stage sets checkpointing),
    and notes that GPT-2's Conv1D needs fan_in_fan_out (peft sets it)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fan_in_fan_out", category=UserWarning)
        warnings.filterwarnings(
            "ignore", message=".*is_gradient_checkpointing", category=FutureWarning
        )
        yield
