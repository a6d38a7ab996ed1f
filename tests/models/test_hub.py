"""Tests for --base-model as a local directory or a Hub id (instructflow.models.hub), offline."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import constants

from instructflow.models.hub import ModelNotFoundError, resolve_pretrained
from instructflow.models.lm import load_causal_lm
from tests.models.test_lm import save_tiny_checkpoint


@pytest.fixture
def offline_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache, and the Hub switched off (as on this machine)."""
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_a_local_directory_is_used_as_it_is(tmp_path):
    model_dir = save_tiny_checkpoint("gpt2", tmp_path / "my model")
    assert resolve_pretrained(str(model_dir)) == model_dir


def test_a_missing_local_path_fails_naming_it(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such model directory") as error:
        resolve_pretrained(str(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere") in str(error.value)


def test_a_models_config_file_given_for_its_folder_names_the_folder(tmp_path):
    # given the path of the model's config.json instead of its folder (a user's slip)
    model_dir = save_tiny_checkpoint("gpt2", tmp_path / "my model")
    # then the error says it is a file and names the folder to give (it said "no such
    # model directory" of a path that exists)
    with pytest.raises(ModelNotFoundError, match="a file, not a model directory") as error:
        resolve_pretrained(str(model_dir / "config.json"))
    assert f"give the folder holding config.json and the weights: {model_dir})" in str(error.value)


def test_a_hub_id_in_the_cache_resolves_offline_to_its_snapshot(tmp_path, offline_cache):
    # given a model cached the way huggingface_hub lays it out (refs/main -> snapshots/<commit>)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = offline_cache / "models--acme--tiny-gpt2"
    save_tiny_checkpoint("gpt2", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    # when it is asked for by id (default revision, then by commit)
    by_id = resolve_pretrained("acme/tiny-gpt2")
    by_commit = resolve_pretrained("acme/tiny-gpt2", revision=commit)
    # then both are the cached snapshot, which loads as a causal LM
    assert by_id == by_commit == repo / "snapshots" / commit
    model, _ = load_causal_lm(by_id)
    assert model.config.model_type == "gpt2"


def test_a_hub_id_missing_offline_fails_in_one_line_naming_it(offline_cache):
    with pytest.raises(ModelNotFoundError) as error:
        resolve_pretrained("acme/not-downloaded", revision="v1")
    message = str(error.value)
    assert "acme/not-downloaded@v1" in message and "offline" in message
    assert "\n" not in message


def test_the_cli_refuses_a_missing_hub_id_before_any_stage_runs(tmp_path):
    # given an offline machine with an empty cache and an empty (DVC) project root
    env = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "INSTRUCTFLOW_ROOT": str(tmp_path / "project"),
    }
    env.pop("HF_HUB_CACHE", None)
    (tmp_path / "project" / ".dvc").mkdir(parents=True)
    # when a run asks for a Hub id that is not there
    done = subprocess.run(
        [sys.executable, "-m", "instructflow.flows.cli", "run", "--profile", "smoke",
         "--base-model", "acme/not-downloaded"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    # then it is refused as bad input is: one line naming the model and the field, then
    # the MLflow parent run that records it; no stage was started
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 2, done.stderr
    assert "acme/not-downloaded" in lines[0] and "field 'base_model'" in lines[0], done.stderr
    assert lines[1].startswith("instructflow: MLflow run ") and lines[1].endswith("marked FAILED")
    assert not (tmp_path / "project" / "runs").exists()


def test_a_hub_id_missing_offline_says_how_to_go_online(offline_cache):
    # the project sets HF_HUB_OFFLINE=1 by default: the message gives the README's fix
    with pytest.raises(ModelNotFoundError, match=r"export HF_HUB_OFFLINE=0"):
        resolve_pretrained("acme/not-downloaded")
