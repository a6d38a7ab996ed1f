"""Whom the gate plays: the champion of the registered model (unless it holds the
candidate's very weights), or SFT while there is none or it cannot be loaded; and whether
a finished registry stage's cached result still says what the registry holds."""

import glob
import shutil
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from instructflow.models.lm import load_causal_lm
from instructflow.tasks.evaluation import Policy
from instructflow.tasks.registry_config import POLICY_MODEL
from instructflow.tasks.registry_lookup import alias_version, champion_version
from instructflow.tasks.registry_weights import registered_version


def rival_champion(client: MlflowClient, policy_dir: str, name: str = POLICY_MODEL) -> str | None:
    """The champion version this checkpoint must beat; None (the bar is SFT) with no
    champion, or when the champion holds this checkpoint's weights (from whichever run)."""
    champion = champion_version(client, name)
    if champion is None:
        return None
    return None if registered_version(client, name, policy_dir) == champion else champion


def gate_opponent(client: MlflowClient, policy_dir: str, name: str = POLICY_MODEL) -> str:
    """Whom the gate will judge this checkpoint against: part of the registry stage's cache key.

    A champion that moved to other weights since the stage last ran makes its
    cached decision stale; these weights as champion do not.
    """
    champion = rival_champion(client, policy_dir, name)
    return f"{name} champion v{champion}" if champion else f"{name} sft"


def registry_moved(
    client: MlflowClient, result: dict, names: tuple[str, str], dirs: tuple[str, str]
) -> str | None:
    """What a finished registry stage's `result` says that the registry no longer holds, or None.

    The stage's cache key covers whom the gate plays (gate_opponent) but not what
    later runs or people did to the versions and aliases it reported: a later
    run's candidate now `challenger`, a version deleted. Such a result is stale.
    `names` and `dirs`: (policy, reward model) registered model names and checkpoints.
    """
    reported = (result["policy_version"], result["reward_model_version"])
    for name, model_dir, version in zip(names, dirs, reported, strict=True):
        if registered_version(client, name, model_dir) != version:
            return f"{name} v{version} (this run's checkpoint) is no longer registered"
    challenger = alias_version(client, names[0], "challenger")
    if challenger != reported[0]:
        return f"{names[0]}'s challenger is v{challenger}, not this run's v{reported[0]}"
    # The result reports where `champion` stood; a person promoting (or unsetting) it since
    # leaves the key alone when the opponent stays SFT, so compare it too.
    champion = champion_version(client, names[0])
    if champion != result.get("champion"):
        was = f"v{result['champion']}" if result.get("champion") else "none"
        return f"{names[0]}'s champion is {f'v{champion}' if champion else 'none'}, not {was}"
    return None


def local_checkpoint(name: str, version: str) -> str:
    """Download a registered version and return the folder of its Hugging Face checkpoint."""
    root = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}"))
    if (root / "model" / "config.json").exists() and (root / "components" / "tokenizer").is_dir():
        # transformers flavor: weights in model/, tokenizer beside them in components/.
        for file in (root / "components" / "tokenizer").iterdir():
            shutil.copy2(file, root / "model" / file.name)
        return str(root / "model")
    configs = glob.glob(f"{root}/artifacts/*/config.json")
    if not configs:
        raise FileNotFoundError(f"no Hugging Face checkpoint inside models:/{name}/{version}")
    return str(Path(configs[0]).parent)


def choose_incumbent(
    client: MlflowClient, name: str, policy_dir: str, sft_dir: str
) -> tuple[Policy, str, str | None]:
    """Whom the challenger plays: (policy, its name in the report, a note if the bar fell to SFT).

    A champion whose checkpoint is missing or does not load cannot be judged;
    the gate then plays SFT and says which version it skipped and why.
    """
    champion = rival_champion(client, policy_dir, name)
    if champion is None:
        return Policy("sft", Path(sft_dir)), "sft", None
    try:
        path = local_checkpoint(name, champion)
        load_causal_lm(path)
    except Exception as error:  # any reason a stored model cannot be opened
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        note = f"{name} v{champion} (champion) cannot be compared: {reason}; the gate played sft"
        return Policy("sft", Path(sft_dir)), "sft", note
    return Policy("champion", Path(path)), f"champion v{champion}", None


def incumbent_base_model(client: MlflowClient, name: str, incumbent: str) -> str | None:
    """The base model the gate's `incumbent` was trained from, as its version's tags record it
    (tag `base_model`); None for SFT (the candidate's own base) or a version without the tag.
    `incumbent`: "champion vN" or "sft", as choose_incumbent names it."""
    if not incumbent.startswith("champion v"):
        return None
    version = incumbent.removeprefix("champion v")
    try:
        return client.get_model_version(name, version).tags.get("base_model")
    except MlflowException as error:
        if error.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise  # a lost server is no missing version
        return None  # deleted since it was played (`eval import` long after its run)
