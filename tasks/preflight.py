"""Refuse bad input before the first training step: every table, every input, the params.

`check_inputs` gathers every problem it can find into one TableError
(file, row, field per line): each table of the profile (schema, missing or
empty file), split disjointness by user, human comparisons, a base-model
directory, parameters that only make sense together, and the length of
every row against the model's context as the stages will encode it.

`preflight` adds the DVC data gate and remembers inputs that passed (by
content: data md5, params, digests of the files they name), so the CLI can
check before Prefect starts and the flow, which checks again for runs that
come from a deployment, finds it done. A refusal is bad input, never
retried; `refuse` ends the MLflow parent run FAILED with the reason and
returns the Prefect state that fails the flow run without a traceback.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from functools import cache
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from instructflow.tasks import data, lora_checks
from instructflow.tasks.data_version import DataMismatchError
from instructflow.tasks.input_checks import (
    base_model_problems,
    config_file_problems,
    gold_key_problems,
    human_comparisons_problems,
    length_problems,
    table_problems,
)
from instructflow.tasks.paths import runs_dir
from instructflow.tasks.runtime_checks import PARAMS, runtime_problems
from instructflow.tasks.stage import content_digest, import_closure_digest, mark_done, stage_key
from instructflow.tasks.table_errors import refused
from instructflow.tasks.tables import Problem, TableError, check_user_splits
from instructflow.world import layout


class InputRefused(ValueError):
    """A run refused before training; the message names file, row and field."""


def _param_problems(params: Any) -> list[Problem]:
    base = params.stage("base")
    problems = []
    if not params.base_model and base.block_size > base.n_positions:
        message = (
            f"{base.block_size} > base.n_positions {base.n_positions}: a block must fit the context"
        )
        problems.append(Problem(PARAMS, 0, "base.block_size", message))
    if not params.base_model and base.n_embd % base.n_head:
        message = f"base.n_embd {base.n_embd} is not a multiple of base.n_head {base.n_head}"
        problems.append(Problem(PARAMS, 0, "base.n_head", message))
    human = params.comparisons.human_comparisons
    if human and not Path(human).is_file():
        problems.append(Problem(human, 0, "comparisons.human_comparisons", "file not found"))
    return problems + runtime_problems(params)


def _is_local(name: str) -> bool:
    """A --base-model that names a local directory (rather than a Hub id)."""
    return Path(name).exists() or name.startswith(("/", ".", "~"))


def check_inputs(params: Any, profile_dir: Path) -> None:
    """Raise one TableError listing every problem of the run's inputs; return if there is none."""
    problems = _param_problems(params)
    frames: dict[str, pd.DataFrame] = {}
    for rel, kind in data.TABLE_KINDS.items():
        frame, found = table_problems(profile_dir / rel, kind)
        problems += found
        if frame is not None:
            frames[rel] = frame
    prompt_tables = {
        str(profile_dir / rel): frames[rel] for rel in layout.PROMPT_TABLES if rel in frames
    }
    try:
        check_user_splits(prompt_tables)
    except TableError as error:
        problems += error.problems
    problems += gold_key_problems(profile_dir / layout.GOLD_KEY, prompt_tables)

    if params.base_model and _is_local(params.base_model):
        folder = Path(params.base_model).expanduser()
        context, found = base_model_problems(folder)
        problems += found
        tokenizer = _hf_tokenizer(str(folder))
    elif params.base_model:
        context, tokenizer = None, None  # a Hub id: its loader checks it
    else:
        base = params.stage("base")
        context = base.n_positions
        tokenizer = _embedded_tokenizer(str(profile_dir), base.vocab_size)

    human = None
    if (
        params.comparisons.human_comparisons
        and Path(params.comparisons.human_comparisons).is_file()
    ):
        human, found = human_comparisons_problems(
            Path(params.comparisons.human_comparisons), prompt_tables
        )
        problems += found

    if not problems and not (params.base_model and not _is_local(params.base_model)):
        config = lora_checks.model_config(params.base_model)
        problems += lora_checks.lora_target_problems(params, config)
    if context is not None and not problems:
        problems += _length_problems(params, profile_dir, frames, human, context, tokenizer)
    if problems:
        raise TableError(problems)


def _length_problems(params, profile_dir, frames, human, context, tokenizer) -> list[Problem]:
    from instructflow.tasks.evaluation import fewshot_prefix

    evaluation = params.stage("evaluation")
    sampled = {
        layout.PPO_TRAIN: [(params.stage("ppo").max_new_tokens, "")],
        layout.PPO_VALID: [(params.stage("ppo").max_new_tokens, "")],
        layout.EVAL_TEST: [
            (evaluation.max_new_tokens, fewshot_prefix(profile_dir, evaluation.fewshot_examples)),
            (params.stage("comparisons").max_new_tokens, ""),  # held-out comparisons
        ],
    }
    if human is None:  # the RM prompts are sampled from only without human comparisons
        room = params.stage("comparisons").max_new_tokens
        sampled |= {layout.RM_TRAIN: [(room, "")], layout.RM_VALID: [(room, "")]}
    trained = [layout.SFT_TRAIN, layout.SFT_VALID, layout.FLAN_MIXTURE, layout.T0_MIXTURE]
    found: dict[tuple[str, int, str], Problem] = {}
    for rel in trained:
        for p in length_problems(str(profile_dir / rel), frames[rel], context, tokenizer, 0):
            found.setdefault((p.file, p.row, p.field), p)
    for rel, uses in sampled.items():
        for room, prefix in uses:
            for p in length_problems(
                str(profile_dir / rel), frames[rel], context, tokenizer, room, prefix
            ):
                found.setdefault((p.file, p.row, p.field), p)
    if human is not None:
        file = params.comparisons.human_comparisons
        for p in length_problems(file, human, context, tokenizer, 0):
            found.setdefault((p.file, p.row, p.field), p)
    return list(found.values())


def _hf_tokenizer(folder: str):
    @cache
    def load():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(folder, local_files_only=True)

    return load


def _embedded_tokenizer(profile_dir: str, vocab_size: int):
    """The tokenizer the base-model stage will train (trained here only if some row needs it)."""

    @cache
    def train():
        from instructflow.models.tokenizer import train_tokenizer
        from instructflow.tasks.base_model import tokenizer_texts

        return train_tokenizer(tokenizer_texts(Path(profile_dir)), vocab_size)

    return train


# --- the gate a run passes first ----------------------------------------------------

PREFLIGHT_CODE = import_closure_digest("instructflow.tasks.preflight")


def _passed_key(params: Any, md5: str) -> str:
    named = {}
    human = params.comparisons.human_comparisons
    if human and Path(human).is_file():
        named["human_comparisons"] = content_digest(human)
    if params.base_model and Path(params.base_model).exists():
        named["base_model"] = content_digest(params.base_model)
    return stage_key(
        "preflight", PREFLIGHT_CODE, params.model_dump(mode="json"), {"data_md5": md5, **named}
    )


def preflight(params: Any, root: Path) -> data.DataVersion:
    """data/ as data.dvc names it, and every input checked; raises DataMismatchError or TableError."""
    version = data.ensure_data(root, params.allow_data_mismatch)
    passed = runs_dir() / "preflight" / _passed_key(params, version.md5)
    if not (passed / "DONE.json").exists():
        check_inputs(params, root / "data" / params.profile)
        passed.mkdir(parents=True, exist_ok=True)
        mark_done(passed, {"md5": version.md5})
    return version


def refusal_of(params: Any, root: Path) -> tuple[dict | None, str | None]:
    """(data version, None) if the run may start, else (None, why not)."""
    try:
        return asdict(preflight(params, root)), None
    except (TableError, DataMismatchError) as error:
        return None, refused(error)


def local_base_model(params: Any) -> tuple[str | None, str | None]:
    """(params.base_model's local directory, None), or (None, why the run is refused).

    A Hub id becomes its cached snapshot (the commit in its path, so in the cache keys).
    Asked inside the run's MLflow parent run, so a refusal is recorded there (`refuse`).
    """
    from instructflow.models.hub import ModelNotFoundError, resolve_pretrained

    if not params.base_model:
        return None, None
    folder = Path(params.base_model).expanduser()
    if _is_local(params.base_model) and not folder.is_dir():  # as check_inputs names it
        return None, refused(TableError(config_file_problems(folder)))
    try:
        return str(resolve_pretrained(params.base_model, params.base_model_revision)), None
    except ModelNotFoundError as error:
        return None, refused(f"{error} (field 'base_model')")


@task(name="preflight", task_run_name="preflight", cache_policy=NO_CACHE, version=PREFLIGHT_CODE)
def preflight_task(root: str, params: Any) -> dict:
    """The data gate and every input check; reports a refusal instead of raising (no traceback)."""
    version, refusal = refusal_of(params, Path(root))
    return {"version": version, "refusal": refusal}


def refuse(message: str) -> Failed:
    """End the active MLflow run FAILED with the reason; the Prefect state that fails the flow run."""
    mlflow.set_tags({"refused": "true", "failure_reason": message[:5000]})
    mlflow.end_run(status="FAILED")
    get_run_logger().error(message)
    return Failed(message=message, data=InputRefused(message))


def record_refusal(params: Any, message: str) -> str:
    """For a refusal before the flow starts (the CLI): a parent run, FAILED, with the reason."""
    from instructflow.tasks import tracking

    # A first run's store is created here: MLflow's two lines about its tables would stand
    # between the refusal and the line that says where it is recorded.
    store_log = logging.getLogger("mlflow.store.db.utils")
    level = store_log.level
    store_log.setLevel(logging.WARNING)
    try:
        tracking.setup()
    finally:
        store_log.setLevel(level)
    tags = {"profile": params.profile, "seed": str(params.seed), "refused": "true"}
    # Named as a flow's parent run is (rlhf-<profile>-seed<seed>-<flow run>): no flow ran.
    name = f"rlhf-{params.profile}-seed{params.seed}-refused"
    with mlflow.start_run(run_name=name, tags=tags) as run:
        mlflow.log_dict(json.loads(params.model_dump_json()), "params.json")
        mlflow.set_tag("failure_reason", message[:5000])
        mlflow.end_run(status="FAILED")
    return run.info.run_id
