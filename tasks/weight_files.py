"""A model folder's weight files, checked without loading the weights.

`weight_problems` looks at the file transformers would load (the same order
it tries: model.safetensors, then its sharded index, then pytorch_model.bin,
then its sharded index) and at every shard an index names: each shard is
there, a safetensors file's header is readable and matches the file's size,
a .bin file's zip directory is intact. A missing shard or a cut-off file
would otherwise pass the checks before training and fail in the base-model
stage, retried, with a traceback that names neither the folder nor the file.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from instructflow.tasks.tables import Problem

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
FIELD = "weights"  # the field of a problem in a weight file (it has no rows or fields)
# torch.save's pickle format before torch 1.6 (not a zip): a pickle's protocol byte.
# Such a file can only be read by unpickling it, which loads the weights: it is let through.
LEGACY_PICKLE = b"\x80"


def weight_problems(folder: Path) -> list[Problem]:
    """The problems of the weight files transformers would load from `folder` (none if fine)."""
    found = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not found:
        message = f"no weights ({' or '.join(WEIGHT_FILES)})"
        return [Problem(str(folder), 0, WEIGHT_FILES[0], message)]
    first = found[0]
    if first.name.endswith(".index.json"):
        return _index_problems(first)
    return _file_problems(first)


def weight_paths(folder: Path) -> list[Path]:
    """The weight files transformers would load from `folder`: the first of WEIGHT_FILES
    there, and for a sharded index every shard it names (sorted); [] when there is none.
    An unreadable index is taken alone: weight_problems names what is wrong with it."""
    found = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not found:
        return []
    if not found[0].name.endswith(".index.json"):
        return found[:1]
    try:
        shards = sorted(set(json.loads(found[0].read_text())["weight_map"].values()))
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        return found[:1]
    return [found[0], *(folder / name for name in shards if isinstance(name, str))]


def _file_problems(path: Path) -> list[Problem]:
    if path.name.endswith(".safetensors"):
        return _safetensors_problems(path)
    return _pickle_problems(path)


def _index_problems(index: Path) -> list[Problem]:
    """Every shard the index names, present and readable."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as error:
        message = (
            f"not a sharded-weights index (JSON with a 'weight_map' of tensor -> file): {error!r}"
        )
        return [Problem(str(index), 0, FIELD, message)]
    if not shards or not all(isinstance(s, str) for s in shards):
        return [Problem(str(index), 0, FIELD, "its 'weight_map' names no shard files")]
    problems: list[Problem] = []
    for name in shards:
        shard = index.parent / name
        if not shard.is_file():
            message = f"missing: {index.name} names it ({len(shards)} shards)"
            problems.append(Problem(str(shard), 0, FIELD, message))
        else:
            problems += _file_problems(shard)
    return problems


def _safetensors_problems(path: Path) -> list[Problem]:
    from safetensors import safe_open

    try:
        # Reads the header only and checks it against the file's size: catches
        # a truncated or overwritten file before any training.
        with safe_open(str(path), framework="pt") as weights:
            weights.keys()
    except Exception as error:  # safetensors raises its own SafetensorError
        message = f"unreadable safetensors file, truncated or damaged? ({error})"
        return [Problem(str(path), 0, FIELD, message)]
    return []


def _pickle_problems(path: Path) -> list[Problem]:
    """A torch.save file: its zip directory (at the file's end, so a cut-off file has none)."""
    with path.open("rb") as file:
        start = file.read(4)
    if start.startswith(LEGACY_PICKLE):
        return []
    if not start.startswith(b"PK"):
        message = "not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle)"
        return [Problem(str(path), 0, FIELD, message)]
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as error:
        message = (
            f"truncated or damaged PyTorch checkpoint: its zip archive is unreadable ({error})"
        )
        return [Problem(str(path), 0, FIELD, message)]
    if not any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
        message = "not a PyTorch checkpoint: its zip archive has no data.pkl"
        return [Problem(str(path), 0, FIELD, message)]
    return []
