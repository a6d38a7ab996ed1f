"""`instructflow plan`: the memory each training stage needs, with and without LoRA.

Reads the run's settings (a params file, the profile's sizes) and the base
model's config (a directory or Hub id; without one, the embedded GPT-2 the
settings describe), and prints per stage: weights, gradients, optimizer
state, activations of one batch, PPO's rollout (KV cache or log-prob pass),
the peak, and whether it fits `--memory`. See models/memory_plan.py for what
each term counts and what it leaves out.
"""

import re
import subprocess
import sys
import warnings
from pathlib import Path

from transformers import AutoConfig, GPT2Config

from instructflow.flows.params import PipelineParams
from instructflow.flows.params_io import ParamsError
from instructflow.models import memory_plan
from instructflow.models.lora import LoraOptions
from instructflow.models.reward_model import reward_head_problem

UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
EXAMPLES = "(e.g. 24GiB, 80GB, 512MiB)"


def parse_size(text: str) -> int:
    """'24GiB', '80 GB', '512MiB' -> bytes. A bare number is refused: `--memory 24` read as
    24 bytes printed NO for every stage, and a size of 0 as none (no fits column)."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", text)
    if match and not match.group(2):
        raise ValueError(f"{text!r} has no unit {EXAMPLES}")
    if not match or match.group(2).lower() not in UNITS:
        raise ValueError(f"not a memory size: {text!r} {EXAMPLES}")
    size = int(float(match.group(1)) * UNITS[match.group(2).lower()])
    if size < 1:
        raise ValueError(f"not a memory size: {text!r} is 0 bytes {EXAMPLES}")
    return size


def model_config(params: PipelineParams):
    if params.base_model:
        from instructflow.models.hub import resolve_pretrained
        from instructflow.tasks.input_checks import config_file_problems
        from instructflow.tasks.tables import TableError

        # The plan needs the config only (not weights or tokenizer), read as `run` reads it.
        folder = resolve_pretrained(params.base_model, params.base_model_revision)
        if problems := config_file_problems(Path(folder)):
            raise TableError(problems)
        try:
            return AutoConfig.from_pretrained(folder)
        except (ValueError, OSError, KeyError) as error:  # an unknown model_type, a bad field
            first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise ParamsError(f"base_model {folder}: config.json: {first}") from None
    base = params.stage("base")
    return GPT2Config(
        vocab_size=base.vocab_size,
        n_layer=base.n_layer,
        n_head=base.n_head,
        n_embd=base.n_embd,
        n_positions=base.n_positions,
    )


def context_of(config) -> int:
    text = config.get_text_config()
    for name in ("max_position_embeddings", "n_positions"):
        if isinstance(getattr(text, name, None), int):
            return getattr(text, name)
    return 2048


def runtime_bytes() -> int:
    """Peak RSS of a fresh process that imported the training stages and ran a negligible
    model through a load, training steps, a generation and a plot (flows/plan_runtime.py):
    the interpreter and libraries, and what their first use holds, measured now."""
    module = "instructflow.flows.plan_runtime"
    out = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def data_lengths(params: PipelineParams, folder: Path) -> tuple[int, int]:
    """The longest training sequence (a demonstration's or a ranked response's prompt +
    response + EOS) and the longest prompt of a user's dataset, in the base model's tokens
    (chat template included), after the run's own handling of too-long rows
    (`dataset.overlong`): what a run pads its batches to at most, often far below the
    model's context, which is what the plan assumes without it."""
    from instructflow.flows.own_data_checks import max_new_tokens
    from instructflow.tasks.dataset import load_dataset
    from instructflow.tasks.input_checks import base_model_problems
    from instructflow.tasks.lengths import length_check
    from instructflow.tasks.tables import TableError

    if not params.base_model:
        raise ParamsError("plan --data needs the base model the data is for: --base-model DIR")
    # As `run` and `data validate` check it: a folder without a tokenizer was a traceback here.
    if problems := base_model_problems(Path(params.base_model))[1]:
        raise TableError(problems)
    check = length_check(params.base_model, max_new_tokens(params))
    dataset = load_dataset(folder, params.dataset, check)
    items = [*dataset.prompts, *dataset.demonstrations, *dataset.preferences]
    pairs = [check.pair_tokens(i.prompt, r) for i in items for r in i.responses]
    return max(pairs, default=1), max((check.prompt_tokens(i.prompt) for i in items), default=1)


def per_process(batch: int, processes: int) -> int:
    """Rows of a global batch one of `processes` processes holds (the largest shard)."""
    return -(-batch // processes)


def make_plan(
    params: PipelineParams, seq_len: int | None = None, prompt_len: int | None = None
) -> dict:
    """Per stage, full fine-tuning and LoRA (the stage's own lora settings, else peft defaults),
    for one process of `params.processes`: each holds every weight, gradient and optimizer
    state, and its shard of each batch."""
    config = model_config(params)
    no_reward_head = reward_head_problem(config)
    if no_reward_head:  # the RM's network cannot be built, so neither can its plan
        raise ParamsError(f"base_model {params.base_model}: {no_reward_head}")
    from instructflow.tasks.lora_checks import lora_target_problems
    from instructflow.tasks.tables import TableError

    # refused as `run` refuses them: building the LoRA plan failed with peft's traceback
    if problems := lora_target_problems(params, config):
        raise TableError(problems)
    seq = seq_len or context_of(config)
    sft, rm, ppo = params.stage("sft"), params.stage("reward_model"), params.stage("ppo")
    k = params.stage("comparisons").k
    prompt = prompt_len if prompt_len is not None else max(1, seq - ppo.max_new_tokens)
    n = params.processes
    rollout = max(ppo.rollout_batch, ppo.eval_prompts or 0, ppo.reference_samples)
    rows = []
    for lora in (False, True):
        spec = {
            name: cfg.lora or LoraOptions()
            for name, cfg in (("sft", sft), ("reward_model", rm), ("ppo", ppo))
        }
        with warnings.catch_warnings():
            # Networks built on the meta device only to count parameters: peft's note that
            # GPT-2's Conv1D needs fan_in_fan_out (it sets it) and transformers' deprecation
            # of an attribute peft reads say nothing about the plan.
            warnings.filterwarnings("ignore", message=".*fan_in_fan_out", category=UserWarning)
            warnings.filterwarnings(
                "ignore", message=".*is_gradient_checkpointing", category=FutureWarning
            )
            shapes = {
                name: memory_plan.shape_of(config, s if lora else None) for name, s in spec.items()
            }
        rows += [
            memory_plan.plan_sft(
                shapes["sft"], per_process(sft.batch_size, n), seq, lora,
                sft.precision != "fp32", sft.gradient_checkpointing,
            ),
            memory_plan.plan_rm(
                shapes["reward_model"], per_process(rm.batch_size, n), k, seq, lora,
                rm.precision != "fp32", rm.gradient_checkpointing,
            ),
            memory_plan.plan_ppo(
                shapes["ppo"], per_process(rollout, n), per_process(ppo.minibatch_size, n),
                prompt, ppo.max_new_tokens, lora, ppo.precision != "fp32",
            ),
        ]  # fmt: skip
    shape = shapes["sft"]
    return {
        "params": shape.params, "seq_len": seq, "prompt_len": prompt, "processes": n,
        "stages": rows,
    }  # fmt: skip


def render(plan: dict, memory: int | None, runtime: int | None) -> str:
    mib = 2**20
    lines = [
        f"model: {plan['params'] / 1e6:.2f}M parameters; sequences of {plan['seq_len']} tokens "
        f"(PPO: {plan['prompt_len']}-token prompts)"
        + (f"; per process of {plan['processes']}" if plan.get("processes", 1) > 1 else ""),
        f"{'stage':<13}{'LoRA':<6}{'weights':>10}{'grads':>10}{'optim':>10}"
        f"{'activ.':>10}{'rollout':>10}{'peak':>11}  (MiB)" + ("  fits" if memory else ""),
    ]
    for row in plan["stages"]:
        peak = row.peak + (runtime or 0)
        fits = ("  yes" if peak <= memory else "  NO") if memory else ""
        lines.append(
            f"{row.stage:<13}{'yes' if row.lora else 'no':<6}{row.weights / mib:>10.1f}"
            f"{row.gradients / mib:>10.1f}{row.optimizer / mib:>10.1f}"
            f"{row.activations / mib:>10.1f}{row.rollout / mib:>10.1f}{peak / mib:>11.1f}{fits}"
        )
    if runtime:
        lines.append(
            f"peak includes {runtime / mib:.0f} MiB measured runtime (interpreter, libraries and"
            " their first use)"
        )
    else:
        lines.append(
            "peak excludes the runtime (interpreter, libraries, CUDA context): add --runtime"
        )
    return "\n".join(lines)
