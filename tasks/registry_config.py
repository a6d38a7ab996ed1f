"""Which registered models a run competes in (`registry` in a run's parameters)."""

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

POLICY_MODEL = "instructflow-policy"
REWARD_MODEL = "instructflow-reward-model"


class RegistryLookupError(ValueError):
    """A registered model, version or alias that is not there, said with what is
    (tasks/registry.py find_version)."""


class RegistryConfig(BaseModel):
    """Which registered models a run competes in."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_name: str | None = Field(
        None,
        min_length=1,
        description="Registered model of the policy: its `champion` is the rival this run must "
        "beat. Empty: instructflow-policy, or instructflow-policy-smoke on the smoke profile, "
        "so trying the pipeline never touches the champion of real runs; a run on a dataset "
        "adds its folder's name (instructflow-policy-<folder>[-smoke]), so it never competes "
        "with the embedded world's policies.",
    )
    reward_model_name: str | None = Field(
        None,
        min_length=1,
        description="Registered model of the reward model. Empty: instructflow-reward-model "
        "(-<dataset folder> on a dataset, -smoke on the smoke profile).",
    )

    def names(self, profile: str, dataset: str | None = None) -> tuple[str, str]:
        """(policy model, reward model) for a run of `profile`, on `dataset` (a folder) if given."""
        folder = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(dataset).resolve().name) if dataset else ""
        suffix = (f"-{folder}" if folder else "") + ("-smoke" if profile == "smoke" else "")
        return (
            self.model_name or POLICY_MODEL + suffix,
            self.reward_model_name or REWARD_MODEL + suffix,
        )
