"""A finished stage counts as done only while the files it wrote are there as it wrote them."""

import json

from instructflow.tasks.stage import DONE_MARKER, changed_output, is_done, mark_done


def _finished_stage(folder):
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "model.safetensors").write_bytes(bytes(range(256)) * 1024)  # 256 KiB
    (folder / "model" / "config.json").write_text('{"n_embd": 64}')
    (folder / "resume").mkdir()
    (folder / "resume" / "step-1").write_text("a checkpoint, dropped once the stage is done")
    mark_done(folder, {"model_dir": str(folder / "model")})
    return folder


def test_a_finished_stage_with_its_files_as_written_is_done(tmp_path):
    stage = _finished_stage(tmp_path / "sft-1")
    assert is_done(stage) and changed_output(stage) is None
    # and dropping its resume checkpoints (as a finished stage does) changes nothing
    (stage / "resume" / "step-1").unlink()
    assert is_done(stage)


def test_a_deleted_output_makes_it_undone_naming_the_file(tmp_path):
    stage = _finished_stage(tmp_path / "sft-1")
    (stage / "model" / "model.safetensors").unlink()
    assert not is_done(stage)
    assert changed_output(stage) == "model/model.safetensors is missing"


def test_a_truncated_or_rewritten_output_makes_it_undone(tmp_path):
    stage = _finished_stage(tmp_path / "sft-1")
    weights = stage / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    assert changed_output(stage) == "model/model.safetensors changed since the stage wrote it"
    stage = _finished_stage(tmp_path / "sft-2")
    (stage / "model" / "config.json").write_text('{"n_embd": 65}')  # same size, other bytes
    assert changed_output(stage) == "model/config.json changed since the stage wrote it"
    # and the tail of a large file counts too: its last byte flipped
    stage = _finished_stage(tmp_path / "sft-3")
    weights = stage / "model" / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    assert not is_done(stage)


def test_a_stage_recorded_before_fingerprints_still_counts_as_done(tmp_path):
    stage = tmp_path / "sft-old"
    stage.mkdir()
    (stage / DONE_MARKER).write_text(json.dumps({"model_dir": "x"}))
    assert is_done(stage)
