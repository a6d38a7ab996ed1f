"""How a checkpoint is stored with a registered version: the policy in MLflow's
transformers flavor (loads and serves without this project), the reward model
as a pyfunc with a signature; and the version made from the logged model."""

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS
from transformers import GenerationConfig

from instructflow.models.lm import context_length, load_causal_lm

SERVING = Path(__file__).resolve().parent / "serving"
# The policy needs nothing of this project to load (transformers flavor); the
# reward model's pyfunc runs the project's scoring code.
POLICY_REQUIREMENTS = ["torch==2.13.0", "transformers>=5.0,<6"]
REWARD_MODEL_REQUIREMENTS = [*POLICY_REQUIREMENTS, "instructflow"]
# What the reward model's pyfunc reads and returns (its documented signature).
REWARD_MODEL_SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "prompt"), ColSpec("string", "response")]),
    outputs=Schema([ColSpec("double", "reward")]),
)


def log_policy(model_dir: str, name: str):
    """The policy in MLflow's transformers flavor: `mlflow.transformers.load_model` gives a
    text-generation pipeline and `mlflow models serve` serves it, with no project code."""
    model, tokenizer = load_causal_lm(model_dir)
    context = context_length(model)
    # What the pipeline's "hole" (SERVING_CONFIG) keeps a prompt within: a tokenizer may
    # leave it unset (this project's: 1e30), and then a long prompt is never cut.
    tokenizer.model_max_length = context
    with _without_hub_lookup_warnings():
        return mlflow.transformers.log_model(
            transformers_model={"model": model, "tokenizer": tokenizer},
            task="text-generation",
            name=name,
            signature=policy_signature(model.generation_config, context),
            model_config=SERVING_CONFIG,
            # Given, not inferred: inference would ask for vision packages a text model never uses.
            pip_requirements=POLICY_REQUIREMENTS,
        )


# How the served policy (pyfunc, `mlflow models serve`) meets a prompt that leaves fewer
# than max_new_tokens of the model's positions: "hole", the text-generation pipeline's own
# rule, cuts the prompt's start, keeping its last (context - max_new_tokens) tokens, as
# `dataset.overlong: truncate` cuts a dataset's prompts; and it refuses, in one line, a
# max_new_tokens that leaves no room at all. Without it such a request ran past the
# position table (IndexError). The answer still starts with the whole prompt.
SERVING_CONFIG = {"handle_long_generation": "hole"}


# What a pyfunc caller (`mlflow models serve`, `pyfunc.load_model(...).predict(data, params=...)`)
# may set per request. MLflow drops every param a signature does not declare (with a warning),
# so without these a served policy could not be asked for a shorter or a greedy response.
GENERATION_PARAMS = {
    "max_new_tokens": "long",
    "do_sample": "boolean",
    "temperature": "double",
    "top_p": "double",
}


# What the text-generation pipeline generates with where the model's generation config sets
# nothing, as transformers documents it (TextGenerationPipeline's docstring); top_p is
# generate()'s own (no nucleus cut). Not read from the pipeline's private
# `_default_generation_config`: a transformers release that renames it would fail the
# registry stage, a run's last. tests/tasks/test_registry_flavors.py checks these against
# what the installed pipeline samples with.
PIPELINE_DEFAULTS = {"max_new_tokens": 256, "do_sample": True, "temperature": 0.7, "top_p": 1.0}


def policy_signature(generation: GenerationConfig, context: int) -> ModelSignature:
    """Text in, text out, and the generation settings above as params. MLflow passes a
    param's default when a request leaves it out, so each default is what the text-generation
    pipeline would use anyway: the model's generation config where it sets the value, else
    the pipeline's own default (PIPELINE_DEFAULTS), except that max_new_tokens leaves half
    the model's `context` (its positions) to the prompt: a model with 256 positions given 256
    new tokens after any prompt ran past its position table (IndexError) on every request
    that did not set max_new_tokens."""
    effective = PIPELINE_DEFAULTS | {
        k: v for k, v in generation.to_diff_dict().items() if v is not None
    }
    effective["max_new_tokens"] = min(int(effective["max_new_tokens"]), context // 2)
    params = [
        ParamSpec(key, dtype, int(effective[key]) if dtype == "long" else effective[key])
        for key, dtype in GENERATION_PARAMS.items()
    ]
    return ModelSignature(
        inputs=Schema([ColSpec("string")]),
        outputs=Schema([ColSpec("string")]),
        params=ParamSchema(params),
    )


class _HubLookupFilter(logging.Filter):
    """Drops MLflow's warnings that a model card and license were not found on the hub:
    the checkpoint is a local folder, which has neither there; the version's own model
    card (tasks/model_card.py) says what it is."""

    QUIET = ("The model card could not be retrieved from the hub", "Unable to find license")

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.QUIET)


@contextmanager
def _without_hub_lookup_warnings() -> Iterator[None]:
    logger, quiet = logging.getLogger("mlflow.transformers"), _HubLookupFilter()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def log_reward_model(model_dir: str, name: str):
    """The reward model as a pyfunc: rows of (prompt, response) in, one reward each out."""
    with warnings.catch_warnings():
        # The signature documents the input; an example would have MLflow load and run the model.
        warnings.filterwarnings("ignore", message=".*An input example was not provided")
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(SERVING / "reward_model.py"),
            artifacts={"hf_model": model_dir},
            pip_requirements=REWARD_MODEL_REQUIREMENTS,
            signature=REWARD_MODEL_SIGNATURE,
        )


LOGGERS = {"policy": log_policy, "reward_model": log_reward_model}


def create_version(client: MlflowClient, info, name: str, tags: dict[str, str]):
    """A new version of registered model `name` (created first if there is none) from the
    logged model `info` (what a LOGGERS function returned), with `tags` in the same write.

    What mlflow.register_model does, through the client: register_model prints "Registered
    model ... already exists. Creating a new version of this model..." on every run after
    the first, where a model existing is the normal case. Like it, the logged model's
    page links the version (tag mlflow.modelVersions). A version made by a pipeline run
    names that run (tag mlflow_parent_run_id) as its run, not the registry stage's run that
    logged it: MLflow's run page lists under "Registered models" the versions whose run it
    is, and a person looks for them on the pipeline's run (the logged model keeps its own).
    """
    try:
        client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise  # a lost server is no missing model
        client.create_registered_model(name)
    model_id = getattr(info, "model_id", None)
    run_id = tags.get("mlflow_parent_run_id")  # None: the run that logged it (MLflow's default)
    version = client.create_model_version(
        name, info.model_uri, run_id=run_id, tags=tags, model_id=model_id
    )
    if model_id:
        linked = client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS)
        links = [*json.loads(linked or "[]"), {"name": name, "version": version.version}]
        client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(links)})
    return version
