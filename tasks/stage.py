"""What every pipeline stage shares: its cache key, its output folder, its Prefect options.

A stage's key hashes (stage name, the source of the code it runs, its config,
the keys or content digests of its inputs). The code part is
`import_closure_digest(<the stage's module>)`: every project module the stage
imports, found by walking its imports (instructflow.tasks.code_closure), never a hand-kept
list; inputs enter by `content_digest` of what is on disk, never by path. The key names the stage's output folder
runs/<stage>/<key>/, and Prefect caches the stage's result under the same
key, so:
- an unchanged re-run finds every stage cached;
- a changed PPO config changes PPO's key and, through its output key, the
  keys of what reads PPO's output; stages before it keep theirs;
- new data (a new DVC md5) changes every key.
If the output folder was deleted, the key no longer counts as cached.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from instructflow.tasks.code_closure import import_closure_digest  # noqa: F401  (stage modules import it from here)
from instructflow.tasks.paths import runs_dir

ROOT = Path(__file__).resolve().parent.parent
DONE_MARKER = "DONE.json"
OUTPUTS_MANIFEST = "OUTPUTS.json"  # the stage's files as it left them (mark_done)
NOT_OUTPUTS = {DONE_MARKER, OUTPUTS_MANIFEST, "resume"}  # resume/: dropped once done
SAMPLE = 64 * 1024


def content_digest(path: str | Path) -> str:
    """Hash of a file's bytes, or of a folder's files (relative paths and bytes, sorted).

    What a stage key records of an input given by path: editing a file in
    place changes it, moving or renaming the same bytes does not.
    """
    target = Path(path)
    digest = hashlib.sha256()
    if target.is_dir():
        for file in sorted(p for p in target.rglob("*") if p.is_file()):
            digest.update(str(file.relative_to(target)).encode() + b"\0")
            _update_with_file(digest, file)
    else:
        _update_with_file(digest, target)
    return digest.hexdigest()[:16]


def _update_with_file(digest: "hashlib._Hash", file: Path) -> None:
    with file.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    digest.update(b"\0")


# Parameters that name an input file or folder (a config field or a stage
# argument): a stage key holds the digest of what is there, never the path.
CONTENT_KEYED_FIELDS = ("base_model", "human_comparisons", "dataset_dir", "win_margin_from")


def keyed_by_content(values: dict[str, Any]) -> dict[str, Any]:
    """`values` with every CONTENT_KEYED_FIELDS path replaced by its content digest.

    A value that is no local path (a Hub id, None) stays as it is: its name is
    its identity.
    """
    return {
        k: {"content": content_digest(v)}
        if k in CONTENT_KEYED_FIELDS and isinstance(v, str) and v and Path(v).exists()
        else v
        for k, v in values.items()
    }


def key_arguments(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The part of a stage call's keyword arguments that enters its cache key.

    Scalars only (paths of user inputs by content). `*_dir` arguments are left
    out: they are earlier stages' output folders, which sit under the project
    root (so their path differs from one checkout to the next) and which the
    key already holds by those stages' own keys in its `inputs`.
    """
    scalars = {
        k: v
        for k, v in kwargs.items()
        if isinstance(v, str | int | float | type(None)) and not k.endswith("_dir")
    }
    return keyed_by_content(scalars)


def stage_key(stage: str, code: str, config: Any, inputs: dict[str, str]) -> str:
    """The cache key and output-folder name of one stage run."""
    blob = json.dumps(
        {"stage": stage, "code": code, "config": config, "inputs": inputs},
        sort_keys=True,
        default=str,
    )
    return f"{stage}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def output_dir(key: str) -> Path:
    stage = key.rsplit("-", 1)[0]
    return runs_dir() / stage / key


def relocated(result: Any, out_dir: Path) -> Any:
    """A stage result whose paths name `out_dir`, wherever the stage once ran.

    Prefect's result store keeps the absolute paths of the checkout that
    computed a stage. Keys do not depend on where the project lives, so a
    copied or moved project root finds its stages done under the same keys;
    the paths in their results must then be this root's files, not the old ones.
    """
    tail = f"/{out_dir.parent.name}/{out_dir.name}"
    if isinstance(result, dict):
        return {k: relocated(v, out_dir) for k, v in result.items()}
    if isinstance(result, list):
        return [relocated(v, out_dir) for v in result]
    if isinstance(result, str) and tail in result and not result.startswith(str(out_dir)):
        before, _, after = result.partition(tail)
        return str(out_dir) + after if before.endswith("/runs") else result
    return result


def fresh_output_dir(out_dir: str | Path) -> Path:
    """An empty output folder for a stage: leftovers of an unfinished attempt are removed."""
    out = Path(out_dir)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    return out


def _sampled(file: Path, size: int) -> str:
    """A digest of the first and last 64 KiB: cheap on a large checkpoint."""
    digest = hashlib.blake2b(digest_size=12)
    with open(file, "rb") as handle:
        digest.update(handle.read(SAMPLE))
        if size > SAMPLE:
            handle.seek(max(SAMPLE, size - SAMPLE))
            digest.update(handle.read(SAMPLE))
    return digest.hexdigest()


def _whole(file: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    _update_with_file(digest, file)
    return digest.hexdigest()


def _times(status: os.stat_result) -> str:
    # The inode's change time as well as the modification time: a write always moves it,
    # and nothing puts it back, while `cp -p`, `rsync -t` or `touch -r` put back a
    # modification time (a bad copy made so, a byte changed mid-file, was served as done).
    return f"{status.st_mtime_ns}:{status.st_ctime_ns}"


def _fingerprint(file: Path) -> str:
    """What OUTPUTS.json records of a file: size, modification and change times (ns), the
    sampled digest and a digest of every byte."""
    status = file.stat()
    size = status.st_size
    return f"v3:{size}:{_times(status)}:{_sampled(file, size)}:{_whole(file)}"


def _unchanged(file: Path, recorded: str) -> tuple[bool, str]:
    """Whether `file` still holds what `recorded` (its _fingerprint) says, and the fingerprint
    to keep (the recorded one, with the file's new times when only its times changed).

    A file whose size and times are as recorded has not been written since (its
    sampled digest is checked as well); one written since is read whole, so a byte
    changed anywhere in it shows, while one copied or touched with the same bytes
    still counts (and its new times are kept, so it is read whole once). A `v2`
    fingerprint (no change time) is read whole once, then kept as `v3`; one of the
    older form (size and sampled digest) is checked as it was.
    """
    status = file.stat()
    if recorded.startswith("v2:"):
        _, size, _, sampled, whole = recorded.split(":")
        times = None
    elif recorded.startswith("v3:"):
        _, size, mtime_ns, ctime_ns, sampled, whole = recorded.split(":")
        times = f"{mtime_ns}:{ctime_ns}"
    else:
        return recorded == f"{status.st_size}:{_sampled(file, status.st_size)}", recorded
    if status.st_size != int(size) or _sampled(file, status.st_size) != sampled:
        return False, recorded
    if _times(status) == times:
        return True, recorded
    return _whole(file) == whole, f"v3:{size}:{_times(status)}:{sampled}:{whole}"


def _outputs(out_dir: Path) -> dict[str, str]:
    """The stage's files (not its resume checkpoints, dropped once done) and their fingerprints."""
    files = {}
    for file in sorted(out_dir.rglob("*")):
        rel = file.relative_to(out_dir)
        if file.is_file() and rel.parts[0] not in NOT_OUTPUTS:
            files[rel.as_posix()] = _fingerprint(file)
    return files


def _write_manifest(out_dir: Path, outputs: dict[str, str]) -> None:
    # A name of this process's own: two runs that check one finished stage at once
    # each rename a whole file, never one the other is still writing.
    tmp = out_dir / f"{OUTPUTS_MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(outputs, indent=1))
    tmp.replace(out_dir / OUTPUTS_MANIFEST)


def _unreadable_record(record: Path) -> str | None:
    """Why a stage's own record (DONE.json, OUTPUTS.json) cannot be read, or None (also when
    absent). Both are renamed into place whole, but a power cut before the disk wrote them
    can leave one empty: it failed every later run with a JSONDecodeError traceback."""
    try:
        loaded = json.loads(record.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        return f"{record.name} is unreadable ({type(error).__name__}: {error})"
    return None if isinstance(loaded, dict) else f"{record.name} is unreadable (not an object)"


def changed_output(out_dir: Path) -> str | None:
    """What of a finished stage's folder differs from when it finished ("model/model.safetensors
    is missing"), or None. A stage recorded before outputs were fingerprinted: None."""
    manifest = out_dir / OUTPUTS_MANIFEST
    unreadable = _unreadable_record(out_dir / DONE_MARKER) or _unreadable_record(manifest)
    if unreadable:
        return unreadable
    if not manifest.exists():
        return None
    recorded = json.loads(manifest.read_text())
    kept = dict(recorded)
    for rel, fingerprint in recorded.items():
        file = out_dir / rel
        if not file.is_file():
            return f"{rel} is missing"
        same, kept[rel] = _unchanged(file, fingerprint)
        if not same:
            return f"{rel} changed since the stage wrote it"
    if kept != recorded:
        try:
            _write_manifest(out_dir, kept)
        except OSError:  # a read-only copy of runs/: it is read whole again next time
            pass
    return None


def is_done(out_dir: Path) -> bool:
    """Finished, and every file it wrote still there as written."""
    return (out_dir / DONE_MARKER).exists() and changed_output(out_dir) is None


def done_result(out_dir: Path) -> dict:
    """The result a finished stage recorded in its folder (see mark_done)."""
    return json.loads((out_dir / DONE_MARKER).read_text())


def mark_done(out_dir: Path, result: dict) -> dict:
    """Record a finished stage (written last, atomically): its folder is now complete,
    its files fingerprinted (`changed_output`)."""
    _write_manifest(out_dir, _outputs(out_dir))
    tmp = out_dir / (DONE_MARKER + ".tmp")
    tmp.write_text(json.dumps(result, sort_keys=True, indent=2, default=str))
    tmp.replace(out_dir / DONE_MARKER)
    return result


def cache_key_from_out_dir(_context: Any, parameters: dict[str, Any]) -> str:
    """Prefect cache key: the name of the stage's output folder (see stage_key).

    Callers pass refresh_cache=True when that folder is gone or incomplete, so
    a cached result never points at files that are not there.
    """
    return Path(parameters["out_dir"]).name


def is_permanent(error: BaseException) -> bool:
    """True for bad input, which a retry cannot fix (a table, a data version, a value), and storage that fails (tasks/storage_faults.py).

    IndexError, KeyError and TypeError are what code raises on data it did not
    expect (an empty table, a missing field): the same input fails the same way.
    """
    from instructflow.tasks.data_version import DataMismatchError
    from instructflow.tasks.storage_faults import is_storage_fault
    from instructflow.tasks.tables import TableError

    permanent = (TableError, DataMismatchError, ValueError, IndexError, KeyError, TypeError)
    # A full disk stays full, a read-only folder read-only: a retry cannot help.
    return isinstance(error, permanent) or is_storage_fault(error)


def retry_only_transient(_task: Any, _task_run: Any, state: Any) -> bool:
    """Retry crashes and I/O trouble, never bad input (`is_permanent`)."""
    try:
        state.result()
    except Exception as error:
        return not is_permanent(error)
    return True


def prefect_options(stage: str, code: str, retries: int = 0) -> dict[str, Any]:
    """Keyword arguments for @task shared by every stage wrapper."""
    return {
        "name": stage,
        "version": code,
        "cache_key_fn": cache_key_from_out_dir,
        "persist_result": True,
        "retries": retries,
        "retry_delay_seconds": 5,
        "retry_condition_fn": retry_only_transient,
        "log_prints": True,
    }
