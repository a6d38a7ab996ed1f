"""Which registered version already holds a checkpoint: by the digest of its weights.

A scheduled retrain often reproduces weights a version already holds: PPO kept
SFT's weights, or a setting that changes a stage's cache key (and so its
output folder) but not what it trains. Registering those again would fill
the registry with identical copies, so each version carries its weights'
digest as a tag (`weights_digest`), read back here without downloading any
model; the version that holds a candidate's weights is reused instead.

A version registered before digests were tagged is recognised by the stage
output folder it came from (`checkpoint_key`), as it was then.

A reused version keeps the lineage tags of the run that registered it (its origin:
that run's commit, data, Prefect and MLflow runs made these weights); the latest run
that trained them again adds its own under `last_confirmed_by_` (`confirm_reuse`),
and its evaluation figures and gate decision replace the earlier run's, as its model
card does: the card's "Last confirmed by" names that run.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from mlflow import MlflowClient

from instructflow.tasks.model_card import CONFIRMED  # the run that last confirmed a version
from instructflow.tasks.registry_pending import is_incomplete
from instructflow.tasks.stage import content_digest
from instructflow.tasks.weight_files import weight_paths

# Tags on every registered version: the stage output folder its checkpoint came from,
# and the digest of its weights (weights_digest).
CHECKPOINT_TAG = "checkpoint_key"
WEIGHTS_TAG = "weights_digest"
# The config key that names the transformers release which wrote it: not part of the model.
WRITER_KEY = "transformers_version"
# The lineage keys that say which run that was (its code, its data, its Prefect and MLflow
# runs); a dataset run's per-table data_md5_* tags count too.
RUN_LINEAGE = (
    "git_commit",
    "dvc_data_md5",
    "prefect_flow_run_id",
    "prefect_flow_run_url",
    "mlflow_parent_run_id",
    "mlflow_parent_run_url",
    "seed",
)


def checkpoint_key(model_dir: str | Path) -> str:
    """What identifies a checkpoint across runs: its stage's output folder, named by the stage's cache key."""
    return Path(model_dir).parent.name


def weights_digest(model_dir: str | Path) -> str | None:
    """A digest of what the model computes: its weight files' bytes (every shard) and its
    config.json; None for a folder without weights.

    The config counts because a reward model's bias (reward_offset) lives there, not in the
    weights; the key naming the transformers release that wrote it does not. Tokenizer and
    generation-config files are left out: the weights were trained with one tokenizer.
    """
    folder = Path(model_dir)
    files = weight_paths(folder)
    if not files:
        return None
    lines = [f"{file.relative_to(folder)}:{_file_digest(file)}" for file in files]
    config = folder / "config.json"
    if config.is_file():
        values = {k: v for k, v in json.loads(config.read_text()).items() if k != WRITER_KEY}
        lines.append(f"config.json:{json.dumps(values, sort_keys=True)}")
    text = "".join(f"{line}\n" for line in sorted(lines))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def same_weights(model_dir: str | Path, other_dir: str | Path) -> bool:
    """Whether two checkpoints compute the same thing (weights_digest; False without weights)."""
    digest = weights_digest(model_dir)
    return digest is not None and digest == weights_digest(other_dir)


def _file_digest(file: Path) -> str:
    # A run asks for a checkpoint's digest several times (whom the gate plays, whether its
    # cached result is stale, registering): a multi-GB file is read once per content.
    stat = file.stat()
    return _digest_of(str(file.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=256)
def _digest_of(path: str, _size: int, _mtime_ns: int) -> str:
    return content_digest(path)


def registered_version(client: MlflowClient, name: str, model_dir: str | Path) -> str | None:
    """The version of `name` that holds this checkpoint, if any: the oldest whose weights
    digest is this checkpoint's, else one without a digest tag registered from this very
    folder (a tagged version from this folder holds what the folder held then)."""
    digest = weights_digest(model_dir)
    versions = sorted(
        client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version)
    )
    for version in versions:
        if digest is not None and version.tags.get(WEIGHTS_TAG) == digest:
            return str(version.version)
    key = checkpoint_key(model_dir)
    for version in versions:
        if WEIGHTS_TAG not in version.tags and version.tags.get(CHECKPOINT_TAG) == key:
            return str(version.version)
    return None


def weight_tags(model_dir: str | Path) -> dict[str, str]:
    """The tags a new version of this checkpoint carries: its folder and its weights' digest."""
    digest = weights_digest(model_dir)
    return {CHECKPOINT_TAG: checkpoint_key(model_dir)} | ({WEIGHTS_TAG: digest} if digest else {})


def reuse_note(name: str, version: str, digest: str | None) -> str:
    """What a run that registered no new version says, in its report and MLflow run."""
    return (
        f"{name} v{version} already holds these weights (weights digest {digest}): "
        f"no new version registered; the gate acted on v{version}"
    )


def confirmation_tags(lineage: dict) -> dict[str, str]:
    """The `last_confirmed_by_*` tags of a run that trained a registered version's weights again."""
    keys = [*RUN_LINEAGE, *sorted(k for k in lineage if k.startswith("data_md5_"))]
    return {CONFIRMED + k: str(lineage[k]) for k in keys if lineage.get(k) is not None}


def confirm_reuse(
    client: MlflowClient, name: str, version: str, lineage: dict, figures: dict
) -> None:
    """Tag a reused version with the run that reused it and that run's `figures` (its
    evaluation, which the gate's tags and the card written next are of too); its own
    lineage tags, the run that registered the weights first, are left as they are."""
    tags = confirmation_tags(lineage) | {k: str(v) for k, v in figures.items() if v is not None}
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def card_source(
    client: MlflowClient, name: str, version: str, new: bool, lineage: dict, figures: dict
) -> tuple[dict, dict] | None:
    """The lineage and figures to write a version's card from, or None when it has its card.

    A new version's are this run's. A reused version without a description was left
    by a run stopped between registering it and writing its card (a kill while the
    policy was being logged): its card is written from the tags that run gave it, so
    its origin stays that run's, as its tags say. So is one whose description is the note
    that its run was interrupted, or whatever part of a card that run wrote.
    """
    if new:
        return lineage, figures
    held = client.get_model_version(name, version)
    if held.description and not is_incomplete(held.tags):
        return None
    tags = held.tags
    return {k: tags[k] for k in lineage if k in tags}, {
        k: _number(tags[k]) for k in figures if k in tags
    }


def _number(text: str) -> float | str:
    """A figure read back from its tag (tags are text), as the card formats numbers."""
    try:
        return float(text)
    except ValueError:
        return text
