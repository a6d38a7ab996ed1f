"""How a checkpoint is stored with a registered version: the policy in MLflow's
transformers flavor (loads and serves without this project), the reward model
as a pyfunc with a signature."""

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from instructflow.models.lm import load_causal_lm

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
    with _without_hub_lookup_warnings():
        return mlflow.transformers.log_model(
            transformers_model={"model": model, "tokenizer": tokenizer},
            task="text-generation",
            name=name,
            # Given, not inferred: inference would ask for vision packages a text model never uses.
            pip_requirements=POLICY_REQUIREMENTS,
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
