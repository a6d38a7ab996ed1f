"""A finished stage counts as done only while the files it wrote are there as it wrote them."""

import json
import os
import shutil
import struct

from instructflow.tasks import stage as stage_module
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


def test_a_byte_changed_mid_file_makes_it_undone(tmp_path):
    # given a finished stage whose weights get 4 bytes overwritten in the middle (the
    # size, the first and the last 64 KiB all as they were), as a bad copy leaves them
    stage = _finished_stage(tmp_path / "sft-1")
    weights = stage / "model" / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.seek(128 * 1024)
        handle.write(struct.pack("<f", 1.0))
    # then the stage is no longer done, naming the file
    assert changed_output(stage) == "model/model.safetensors changed since the stage wrote it"


def test_a_byte_changed_mid_file_with_its_time_put_back_makes_it_undone(tmp_path):
    # given a finished stage whose weights get a byte changed in the middle, and their
    # modification time put back (`cp -p` or `rsync -t` of a bad copy, `touch -r`): the
    # size, the time, the first and the last 64 KiB all as recorded
    stage = _finished_stage(tmp_path / "sft-1")
    weights = stage / "model" / "model.safetensors"
    before = weights.stat()
    with open(weights, "r+b") as handle:
        handle.seek(128 * 1024)
        handle.write(struct.pack("<f", 1.0))
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert weights.stat().st_mtime_ns == before.st_mtime_ns
    # then the stage is no longer done, naming the file (it was served from the cache)
    assert changed_output(stage) == "model/model.safetensors changed since the stage wrote it"


def test_a_v2_manifest_is_read_whole_once_then_kept_with_change_times(tmp_path, monkeypatch):
    # given a stage finished before change times were recorded (v2: size:mtime:...)
    stage = _finished_stage(tmp_path / "sft-1")
    manifest = stage / "OUTPUTS.json"
    v2 = {}
    for rel, v3 in json.loads(manifest.read_text()).items():
        _, size, mtime, _ctime, sampled, whole = v3.split(":")
        v2[rel] = f"v2:{size}:{mtime}:{sampled}:{whole}"
    manifest.write_text(json.dumps(v2))
    read_whole = []
    real_whole = stage_module._whole
    monkeypatch.setattr(stage_module, "_whole", lambda f: read_whole.append(f) or real_whole(f))
    # then it is done, its files read whole once, and the manifest moves on to v3
    assert changed_output(stage) is None and len(read_whole) == 2
    assert all(v.startswith("v3:") for v in json.loads(manifest.read_text()).values())
    assert changed_output(stage) is None and len(read_whole) == 2


def test_the_same_bytes_written_again_still_count_and_are_read_whole_once(tmp_path, monkeypatch):
    # given a finished stage copied elsewhere (new times, the same bytes)
    stage = _finished_stage(tmp_path / "sft-1")
    copy = tmp_path / "moved" / "sft-1"
    shutil.copytree(stage, copy)  # copytree keeps times: touch them, as `cp -r` would not
    for file in copy.rglob("*"):
        os.utime(file, ns=(file.stat().st_atime_ns, file.stat().st_mtime_ns + 10**9))
    # then it is done, its files read whole once: the manifest keeps their new times
    read_whole = []
    real_whole = stage_module._whole
    monkeypatch.setattr(stage_module, "_whole", lambda f: read_whole.append(f) or real_whole(f))
    assert changed_output(copy) is None
    assert len(read_whole) == 2  # config.json and model.safetensors
    assert changed_output(copy) is None
    assert len(read_whole) == 2  # nothing read whole again


def test_an_older_manifest_is_checked_as_it_was_written(tmp_path):
    # given a stage finished before whole-file digests: size and sampled digest only
    stage = _finished_stage(tmp_path / "sft-1")
    manifest = stage / "OUTPUTS.json"
    older = {
        rel: f"{(stage / rel).stat().st_size}:{stage_module._sampled(stage / rel, (stage / rel).stat().st_size)}"
        for rel in json.loads(manifest.read_text())
    }
    manifest.write_text(json.dumps(older))
    assert changed_output(stage) is None
    (stage / "model" / "config.json").write_text('{"n_embd": 65}')
    assert changed_output(stage) == "model/config.json changed since the stage wrote it"


def test_an_empty_or_garbled_record_makes_it_undone_naming_the_record(tmp_path):
    # given finished stages whose DONE.json or OUTPUTS.json a power cut left empty or cut
    # (they failed every later run with a JSONDecodeError traceback)
    for record, text in [("DONE.json", ""), ("OUTPUTS.json", ""), ("OUTPUTS.json", '{"mo')]:
        stage = _finished_stage(tmp_path / f"sft-{record}-{len(text)}")
        (stage / record).write_text(text)
        # then the stage is not done, and the reason names the record
        assert not is_done(stage)
        assert changed_output(stage).startswith(f"{record} is unreadable (JSONDecodeError")
