"""Fixtures shared by the stage tests in this folder."""

from pathlib import Path

import pytest

from instructflow.models.reward_model import reward_model_from_causal_lm
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
