"""Where a base model comes from: a local directory, or a Hugging Face Hub id.

`from_pretrained` semantics: a directory that exists is used as it is;
anything else is a Hub id (`org/name`), fetched at `revision` into the
Hugging Face cache (HF_HOME / HF_HUB_CACHE), or read from that cache when
offline (HF_HUB_OFFLINE=1). Every later stage reads the resolved local
snapshot, so a run never reaches the network after its start, and a missing
model fails here, in one line, before any training.
"""

from pathlib import Path

# What a causal LM and its tokenizer need; no pickled weights, no remote code.
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"]


class ModelNotFoundError(ValueError):
    """A base model that is neither a local directory nor an obtainable Hub id."""


def resolve_pretrained(name_or_path: str, revision: str | None = None) -> Path:
    """The local directory of `name_or_path` (a directory, or a Hub id fetched into the cache)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if revision:
            raise ModelNotFoundError(
                f"base model {name_or_path}: a local directory has no revision (got {revision!r})"
            )
        return path
    if path.exists():  # config.json itself, say: the model is the folder around it
        raise ModelNotFoundError(
            f"base model {name_or_path}: a file, not a model directory (give the folder "
            f"holding config.json and the weights: {path.parent})"
        )
    if name_or_path.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"base model {name_or_path}: no such model directory")

    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    at = f"@{revision}" if revision else ""
    try:
        local = snapshot_download(
            repo_id=name_or_path, revision=revision, allow_patterns=ALLOW_PATTERNS
        )
    except HFValidationError:
        raise ModelNotFoundError(
            f"base model {name_or_path}: neither a local directory nor a valid Hub id"
        ) from None
    except LocalEntryNotFoundError:
        where = (  # the project defaults to offline (instructflow.tasks.env): say how to go online
            "offline (HF_HUB_OFFLINE=1; `export HF_HUB_OFFLINE=0` to fetch it)"
            if constants.HF_HUB_OFFLINE
            else "unreachable"
        )
        raise ModelNotFoundError(
            f"base model {name_or_path}{at}: not a local directory, not in the Hugging Face "
            f"cache ({constants.HF_HUB_CACHE}), and the Hub is {where}"
        ) from None
    except Exception as error:  # repository or revision not found, gated, HTTP errors
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ModelNotFoundError(
            f"base model {name_or_path}{at}: {type(error).__name__} {first_line}".strip()
        ) from None
    if not (Path(local) / "config.json").exists():
        raise ModelNotFoundError(f"base model {name_or_path}{at}: the snapshot has no config.json")
    return Path(local)
