"""Fixtures shared by the stage tests in this folder."""

from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow import MlflowClient

from instructflow.models.reward_model import reward_model_from_causal_lm
from tests.conftest import use_project
from tests.models.test_lm import save_tiny_checkpoint


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny GPT-2 "SFT" checkpoint and an (untrained) reward model made from it."""
    folder = tmp_path_factory.mktemp("tiny-models")
    sft_dir = save_tiny_checkpoint("gpt2", folder / "sft")
    rm, tokenizer = reward_model_from_causal_lm(sft_dir)
    rm.save_pretrained(folder / "rm")
    tokenizer.save_pretrained(folder / "rm")
    return sft_dir, folder / "rm"


@pytest.fixture
def client(tmp_path, monkeypatch) -> MlflowClient:
    """An empty registry in a SQLite store; registering logs no model (the checkpoint folder
    is the version's source). Modules with a registry of another kind define their own."""
    from instructflow.tasks import registry

    client = MlflowClient(tracking_uri=use_project(monkeypatch, tmp_path))
    logged = lambda model_dir, _name: SimpleNamespace(model_uri=model_dir)  # noqa: E731
    monkeypatch.setattr(registry, "LOGGERS", {"policy": logged, "reward_model": logged})
    return client
