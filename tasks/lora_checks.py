"""Each stage's LoRA target names, checked against the model before any stage trains.

peft adapts the modules whose dotted path is a listed name or ends with "."
and the name. A list none of whose names matched failed inside the SFT stage
with peft's NoMatchingPeftModuleError (two tracebacks in a 300-line log), and
a list of which only some names matched adapted fewer modules than asked,
without a word (a new user's typo, in a trial). Either is refused here,
naming the setting and the model's linear layers.
"""

from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config, PretrainedConfig
from transformers.pytorch_utils import Conv1D

from instructflow.models.lora import unmatched_targets
from instructflow.models.reward_model import reward_network_on_meta
from instructflow.tasks.tables import Problem

STAGES = ("sft", "baselines", "reward_model", "ppo")
PARAMS = "params"  # the "file" of problems in the run's parameters


def named_targets(params: Any) -> dict[str, list[str]]:
    """stage -> the module names its `lora.target_modules` lists (stages that list names)."""
    asked = {}
    for stage in STAGES:
        lora = params.stage(stage).lora
        if lora is not None and isinstance(lora.target_modules, list):
            asked[stage] = lora.target_modules
    return asked


def model_config(base_model: str | None) -> PretrainedConfig:
    """The base model's config (a local folder), or the embedded GPT-2's (module names do
    not depend on its sizes)."""
    if base_model:
        return AutoConfig.from_pretrained(Path(base_model).expanduser(), local_files_only=True)
    return GPT2Config(n_layer=1, n_head=2, n_embd=8)


def lora_target_problems(params: Any, config: PretrainedConfig) -> list[Problem]:
    """One problem per listed name that names no module of the policy or reward network,
    and one per name of a policy stage that adapts an embedding the model ties to another."""
    asked = named_targets(params)
    if not asked:
        return []
    with torch.device("meta"):
        networks = [AutoModelForCausalLM.from_config(config), reward_network_on_meta(config)]
    modules = [(name, module) for net in networks for name, module in net.named_modules()]
    names = [name for name, _ in modules]
    linear = sorted(
        {n.rsplit(".", 1)[-1] for n, m in modules if isinstance(m, torch.nn.Linear | Conv1D)}
    )
    return [
        Problem(
            PARAMS,
            0,
            f"{stage}.lora.target_modules",
            f"{target!r} names no module of this {config.model_type} model"
            f" (its linear layers: {', '.join(linear)})",
        )
        for stage, targets in asked.items()
        for target in unmatched_targets(names, targets)
    ] + tied_target_problems(asked, networks[0], config.model_type)


def tied_target_problems(asked: dict[str, list[str]], lm, model_type: str) -> list[Problem]:
    """A policy stage's adapter on the output or input embedding of a model that ties them
    (GPT-2, most small models): merging it into the checkpoint changes the one shared weight,
    so both ends move and the saved (registered) model is not the one trained (a random
    adapter on lm_head of a tiny GPT-2 moved its logits by up to 10 once merged; peft merged
    it without a word, and the check above listed lm_head among the layers to adapt)."""
    out, inp = lm.get_output_embeddings(), lm.get_input_embeddings()
    if out is None or inp is None or out.weight is not inp.weight:
        return []
    ends = {name: module for name, module in lm.named_modules() if module in (out, inp)}
    problems = []
    for stage, targets in asked.items():
        if stage == "reward_model":  # its network has no output embedding to share with
            continue
        for target in targets:
            hit = [n for n in ends if n == target or n.endswith("." + target)]
            if hit:
                problems.append(
                    Problem(
                        PARAMS,
                        0,
                        f"{stage}.lora.target_modules",
                        f"{target!r} adapts {hit[0]}, whose weight this {model_type} model"
                        " shares between its input embedding and its output layer"
                        " (tie_word_embeddings): the merged checkpoint would not compute what"
                        " was trained; leave it out",
                    )
                )
    return problems
