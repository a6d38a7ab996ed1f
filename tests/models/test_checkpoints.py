"""Checkpoint store (atomic, digest-verified, fallback to the one before) and numeric guards."""

from pathlib import Path

import pytest
import torch

from instructflow.models.checkpoints import (
    CheckpointStore,
    TrainingInterrupted,
    after_step,
    clear_stop,
    request_stop,
)
from instructflow.models.lm import load_causal_lm
from instructflow.models.lm_training import OptimConfig, pack_corpus, pretrain
from instructflow.models.numeric import NonFiniteError, check_finite, in_stage
from tests.models.test_lm import CORPUS, save_tiny_checkpoint


def _state(step: int) -> dict:
    return {"step": step, "w": torch.full((3,), float(step))}


def test_store_keeps_the_last_two_and_loads_the_newest(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "resume", every=2)
    for step in (2, 4, 6):
        store.save(step, _state(step))
    assert [p.name for p in store.checkpoints()] == ["step-000000006", "step-000000004"]
    assert store.load()["step"] == 6


def test_a_truncated_newest_checkpoint_falls_back_with_a_warning(tmp_path: Path, capsys) -> None:
    store = CheckpointStore(tmp_path, every=1)
    store.save(1, _state(1))
    newest = store.save(2, _state(2)) / "state.pt"
    newest.write_bytes(newest.read_bytes()[:50])
    assert store.load()["step"] == 1
    # then one line says which checkpoint, why, and what comes next; not a Python warning
    # (file and line of the call, then that line of source)
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"instructflow: warning: checkpoint {tmp_path / 'step-000000002'}")
    assert "sha256" in line and line.endswith("; trying the one at step 1")


def test_no_usable_checkpoint_means_a_fresh_start(tmp_path: Path, capsys) -> None:
    store = CheckpointStore(tmp_path, every=1)
    only = store.save(1, _state(1))
    (only / "meta.json").unlink()  # a checkpoint without its digest is not trusted
    assert store.load() is None
    (line,) = capsys.readouterr().err.splitlines()
    assert "meta.json" in line and line.endswith("; no older one: training from the start")


def test_a_write_killed_half_way_is_ignored_then_cleaned(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, every=1)
    store.save(1, _state(1))
    (tmp_path / ".tmp-leftover").mkdir()  # what a kill during torch.save leaves
    assert store.load()["step"] == 1
    store.save(2, _state(2))
    assert not (tmp_path / ".tmp-leftover").exists()


def test_a_stop_request_checkpoints_at_once_then_interrupts(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, every=100)
    after_step(store, 7, lambda: _state(7))  # not due, no stop: nothing written
    assert store.checkpoints() == []
    request_stop()
    try:
        with pytest.raises(TrainingInterrupted, match="step 7"):
            after_step(store, 7, lambda: _state(7))
    finally:
        clear_stop()
    assert store.load()["step"] == 7
    assert issubclass(TrainingInterrupted, KeyboardInterrupt)  # nothing retries it


def test_check_finite_names_quantity_step_and_stage_counting_from_1() -> None:
    # `step` counts the steps finished before this one; the progress lines count from 1
    check_finite("loss", 3, torch.tensor([1.0, 2.0]))
    with pytest.raises(NonFiniteError, match=r"^iteration 4: advantage is nan"):
        check_finite("advantage", 3, torch.tensor([1.0, float("nan")]), "iteration")
    with pytest.raises(NonFiniteError, match=r"stage sft, step 6: loss is inf"):
        with in_stage("sft"):
            check_finite("loss", 5, float("inf"))


def _tiny_pretrain(tmp_path: Path, model, store=None) -> None:
    _, tokenizer = load_causal_lm(tmp_path / "m")
    blocks = pack_corpus(tokenizer, CORPUS, 16)
    cfg = OptimConfig(lr=1e-3, batch_size=2, warmup_steps=1)
    pretrain(model, blocks, 6, cfg, seed=0, on_log=lambda *_: None, store=store)


def test_a_nan_loss_stops_training_before_the_update(tmp_path: Path) -> None:
    model, _ = load_causal_lm(save_tiny_checkpoint("gpt2", tmp_path / "m"))
    with torch.no_grad():
        model.transformer.wte.weight[:] = float("nan")
    store = CheckpointStore(tmp_path / "resume", every=1)
    with pytest.raises(NonFiniteError, match=r"step 1: loss is nan"):
        _tiny_pretrain(tmp_path, model, store)
    assert store.checkpoints() == []  # nothing poisoned was saved


def test_an_infinite_gradient_stops_training(tmp_path: Path) -> None:
    model, _ = load_causal_lm(save_tiny_checkpoint("gpt2", tmp_path / "m"))
    model.lm_head.weight.register_hook(lambda grad: grad * float("inf"))
    with pytest.raises(NonFiniteError, match=r"step 1: gradient norm is"):
        _tiny_pretrain(tmp_path, model)


def test_a_resumed_loop_says_where_it_resumes(tmp_path: Path, capsys) -> None:
    model, _ = load_causal_lm(save_tiny_checkpoint("gpt2", tmp_path / "m"))
    store = CheckpointStore(tmp_path / "resume", every=2)
    _tiny_pretrain(tmp_path, model, store)  # 6 steps: checkpoints at steps 2, 4 and 6
    assert "resuming" not in capsys.readouterr().out
    _tiny_pretrain(tmp_path, model, store)
    assert "resuming from the checkpoint at step 6" in capsys.readouterr().out
