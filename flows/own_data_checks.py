"""The checks a run on a user's dataset (`--data DIR`) makes before anything starts.

Apart from flows/own_data.py (the flow, which imports MLflow and Prefect: ~5 s of
imports on a 2-core machine) so that `instructflow run` can refuse a bad row in the
seconds its tokenizer takes to load, before it starts Prefect's server or imports the
flow. The flow makes the same checks for a run started from the Prefect form or API.
"""

from __future__ import annotations

from pathlib import Path

from instructflow.flows.params import PipelineParams
from instructflow.tasks import split_sizes
from instructflow.tasks.dataset import load_dataset
from instructflow.tasks.dataset_dvc import version_tags
from instructflow.tasks.dataset_files import missing_folder
from instructflow.tasks.dataset_names import notes
from instructflow.tasks.dataset_report import left_out_notes
from instructflow.tasks.input_checks import base_model_problems
from instructflow.tasks.lengths import length_check
from instructflow.tasks.lora_checks import lora_target_problems, model_config
from instructflow.tasks.runtime_checks import runtime_problems
from instructflow.tasks.tables import TableError

NEEDS_BASE = (
    "a run on your own data needs a base model (--base-model, or base_model in the run's "
    "parameters): a local Hugging Face causal-LM directory"
)


def max_new_tokens(params: PipelineParams) -> int:
    """Room every prompt must leave for sampling: the longest any sampling stage asks for."""
    return max(params.stage("ppo").max_new_tokens, params.stage("evaluation").max_new_tokens)


def preflight(params: PipelineParams) -> dict:
    """Validate the dataset before any flow starts (the CLI calls this: a refusal is a message, not a traceback)."""
    if not params.base_model:
        raise ValueError(NEEDS_BASE)
    if (missing := missing_folder(Path(params.data))) is not None:  # before DVC looks for it
        raise TableError([missing])
    version_tags(Path(params.data), params.allow_data_mismatch)  # a changed dataset is refused
    # The model's folder first, as a run on the embedded world checks it: the length
    # check below needs its tokenizer and config.
    _, problems = base_model_problems(Path(params.base_model))
    problems = problems or lora_target_problems(params, model_config(params.base_model))
    problems += runtime_problems(params)
    if problems:
        raise TableError(problems)
    check = length_check(params.base_model, max_new_tokens(params))
    dataset = load_dataset(Path(params.data), params.dataset, check)
    block = params.stage("ppo").ptx_block_size
    if problems := split_sizes.ptx_mix_problems(dataset, check.tokenizer, block):
        raise TableError(problems)
    return dataset.summary


def early_model_folder(params: PipelineParams) -> str | None:
    """The base model's local folder of a run on a dataset, which the command line can check
    before it starts anything; None where it cannot: no dataset, no model (refused as such),
    a Hub id (fetched first), a folder given a revision or no folder (refused as without a
    dataset)."""
    if not params.data or not params.base_model or params.base_model_revision:
        return None
    folder = Path(params.base_model).expanduser()
    return str(folder) if folder.is_dir() else None


def notes_to_say(summary: dict) -> list[str]:
    """What a dataset that passed its checks warns of: uneven splits, what the run does not
    read, likely typos, and valid rows it leaves out (said before training, not only in the
    report after it)."""
    warnings = [f"warning: {w}" for w in summary.get("split_warnings", [])]
    return warnings + notes(summary) + left_out_notes(summary)
