"""Which registered models a run competes in (`registry` in a run's parameters)."""

import hashlib
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

POLICY_MODEL = "instructflow-policy"
REWARD_MODEL = "instructflow-reward-model"
# MLflow refuses these in a logged model's name, which is the registered name here: a name
# holding one failed the run at its last stage, after every training stage had run.
NAME_PATTERN = "^[^/:.%\"']+$"


def _safe_folder_name(name: str) -> str:
    """A dataset folder's name as a registered model's suffix: runs of characters other than
    ASCII letters, digits, _ and - become one -; a name with none of those (non-Latin
    script) becomes data-<its hash>, so the run still registers apart from the embedded
    world's policies (an empty suffix would compete with their champion)."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")
    return safe or "data-" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]


class RegistryLookupError(ValueError):
    """A registered model, version or alias that is not there, said with what is
    (tasks/registry_lookup.py find_version)."""


class RegistryConfig(BaseModel):
    """Which registered models a run competes in."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_name: str | None = Field(
        None,
        min_length=1,
        pattern=NAME_PATTERN,
        description="Registered model of the policy: its `champion` is the rival this run must "
        "beat. Empty: instructflow-policy, or instructflow-policy-smoke on the smoke profile, "
        "so trying the pipeline never touches the champion of real runs; a run on a dataset "
        "adds its folder's name (instructflow-policy-<folder>[-smoke]), so it never competes "
        "with the embedded world's policies. MLflow allows no / : . % \" ' in it.",
    )
    reward_model_name: str | None = Field(
        None,
        min_length=1,
        pattern=NAME_PATTERN,
        description="Registered model of the reward model. Empty: instructflow-reward-model "
        "(-<dataset folder> on a dataset, -smoke on the smoke profile). MLflow allows no / : . % \" ' in it.",
    )

    def names(self, profile: str, dataset: str | None = None) -> tuple[str, str]:
        """(policy model, reward model) for a run of `profile`, on `dataset` (a folder) if given."""
        folder = _safe_folder_name(Path(dataset).resolve().name) if dataset else ""
        suffix = (f"-{folder}" if folder else "") + ("-smoke" if profile == "smoke" else "")
        return (
            self.model_name or POLICY_MODEL + suffix,
            self.reward_model_name or REWARD_MODEL + suffix,
        )
