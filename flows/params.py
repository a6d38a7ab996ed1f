"""The pipeline's parameters: one pydantic model, which Prefect turns into the UI's run form.

Every field is documented where it is declared (the description shows in the
form). Stage configs nest under their stage's name; their defaults are sized
for the `tiny` profile, and a profile adjusts any field the user did not set
(PipelineParams.stage says what counts as set).
"""

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from instructflow.tasks.base_model_config import BaseModelConfig
from instructflow.tasks.comparisons_config import ComparisonsConfig
from instructflow.tasks.dataset_config import DatasetConfig
from instructflow.tasks.evaluation_config import EvalConfig
from instructflow.tasks.gate_config import GateConfig
from instructflow.tasks.judge_config import JudgeConfig
from instructflow.tasks.ppo_config import SMOKE_OVERRIDES as PPO_SMOKE
from instructflow.tasks.ppo_config import PPOStageConfig
from instructflow.tasks.registry_config import RegistryConfig
from instructflow.tasks.reward_model_config import RewardModelConfig
from instructflow.tasks.sft_config import SFTConfig

# What each profile changes from the stage defaults (which are sized for tiny).
PROFILE_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {
        "base": {
            "vocab_size": 512,
            "n_layer": 2,
            "n_head": 2,
            "n_embd": 64,
            "steps": 60,
            "batch_size": 16,
        },
        "sft": {"epochs": 3},
        "baselines": {"epochs": 3},
        "comparisons": {"heldout_prompts": 60},
        "reward_model": {"epochs": 1},
        "judge": {"epochs": 1},
        "evaluation": {"max_prompts": 60},
        "ppo": PPO_SMOKE,
        "gate": {"max_prompts": 60},
    },
    "tiny": {},
    "small": {
        "base": {"n_layer": 6, "n_head": 6, "n_embd": 192, "steps": 3000},
        "sft": {"epochs": 8},
        "baselines": {"epochs": 8},
    },
}


class PipelineParams(BaseModel):
    """Parameters of one `rlhf_pipeline` run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    profile: Literal["smoke", "tiny", "small"] = Field(
        "tiny",
        description="Size of the embedded world and of training: smoke (tiny models, to try it), tiny (the default demo), small.",
    )
    seed: int = Field(
        0,
        ge=0,
        description="Seed for training and sampling (the data's own seed is part of the DVC data version).",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads for torch (pinned at the start, recorded in the report). Empty: every core this process may use. Figures are reproducible bit for bit only at the same thread count on the same machine.",
    )
    processes: int = Field(
        1,
        ge=1,
        description="Processes per training stage (base model, SFT and baselines, reward model, PPO): above 1, each stage runs under `accelerate launch` (DDP: NCCL on GPUs, gloo on CPU), each process on its share of every global batch; batch sizes stay global. 1: in the task's own process.",
    )
    side_by_side: bool | None = Field(
        None,
        description="With 2+ threads (and 1 process per stage): stages that do not depend on each other run at the same time, half the threads each (FLAN- and T0-style beside SFT -> RM -> judge; PPO-ptx beside PPO), the second lane's training in processes of their own. False: one stage after another, every thread each. Empty: true, except on the smoke profile, whose stages last a second or two (a process of their own costs ~9 s of start-up).",
    )
    base_model: str | None = Field(
        None,
        description="A local Hugging Face causal-LM directory or a Hub id (org/name; fetched into the Hugging Face cache, or read from it when offline) to start from. Empty: train a small GPT-2 on the world's corpus.",
    )
    base_model_revision: str | None = Field(
        None, description="Hub revision (branch, tag or commit) of a base_model given as a Hub id."
    )
    data: str | None = Field(
        None,
        description="A dataset directory (prompts, demonstrations, preferences as JSONL or Parquet) to train on. Empty: the embedded world. Needs base_model.",
    )
    dataset: DatasetConfig = Field(
        default_factory=DatasetConfig,
        description="How a dataset directory is split and how too-long rows are handled.",
    )
    allow_data_mismatch: bool = Field(
        False,
        description="Run even if data/ differs from the version in data.dvc (the run is tagged data_mismatch=true).",
    )
    base: BaseModelConfig = Field(
        default_factory=BaseModelConfig, description="The embedded base model (pretraining)."
    )
    sft: SFTConfig = Field(
        default_factory=SFTConfig, description="Supervised fine-tuning on demonstrations."
    )
    baselines: SFTConfig = Field(
        default_factory=SFTConfig,
        description="Fine-tuning of the FLAN- and T0-style baselines (same budget as SFT).",
    )
    comparisons: ComparisonsConfig = Field(
        default_factory=ComparisonsConfig,
        description="Sampling and ranking of K responses per prompt.",
    )
    reward_model: RewardModelConfig = Field(
        default_factory=RewardModelConfig, description="Reward-model training."
    )
    judge: JudgeConfig = Field(
        default_factory=JudgeConfig,
        description="The held-out judge: a reward model trained only on held-out preferences.",
    )
    ppo: PPOStageConfig = Field(
        default_factory=PPOStageConfig, description="PPO and PPO-ptx (the same settings for both)."
    )
    ptx_gamma: float = Field(
        0.1,
        ge=0,
        description="Weight of the pretraining LM loss in PPO-ptx (0 would make it plain PPO).",
    )
    evaluation: EvalConfig = Field(
        default_factory=EvalConfig, description="Evaluation of all policies on test users."
    )
    gate: GateConfig = Field(
        default_factory=GateConfig,
        description="The promotion gate that moves the `champion` alias.",
    )
    registry: RegistryConfig = Field(
        default_factory=RegistryConfig,
        description="Which registered models the run's policy and reward model join.",
    )
    candidate: Literal["ppo_ptx", "ppo", "sft"] = Field(
        "ppo_ptx", description="Which policy is registered as the challenger."
    )

    @model_serializer(mode="wrap")
    def _what_was_set(self, handler: Any) -> dict[str, Any]:
        """Dumped (a command-line run's Prefect Parameters tab, a refusal's params.json): the
        profile, the seed, and the fields set, a stage's only as far as it was set as
        `stage` reads it (a stage given whole: its fields away from their defaults). With
        every default, a smoke run's dump listed the stage defaults, which are tiny's sizes,
        as if it ran them; the sizes in force are the `settings-in-force` table's. Nothing
        set (the flow's default, which the run form shows): every default, as before."""
        dumped = handler(self)
        if not self.model_fields_set:
            return dumped
        shown = {}
        for name, value in dumped.items():
            config = getattr(self, name)
            if isinstance(config, BaseModel):
                value = {k: v for k, v in value.items() if not _not_set(config, k)}
                if value:
                    shown[name] = value
            elif name in {"profile", "seed"} | self.model_fields_set:
                shown[name] = value
        return shown

    @model_validator(mode="wrap")
    @classmethod
    def _one_line_per_problem(cls, data: Any, handler: Any) -> "PipelineParams":
        """Errors as one line per field with what it allows, wherever params are checked.

        The CLI, a params file and Prefect (which validates a deployment run's
        parameters against this model) all report the same lines.
        """
        from instructflow.flows.params_exact import converted_values
        from instructflow.flows.params_io import INVALID, explain, refused_value

        # a bool for a number, an infinity: pydantic converts or passes them (params_exact)
        lines = [refused_value(loc, value) for loc, value in converted_values(cls, data)]
        try:
            params = handler(data)
        except ValidationError as error:
            lines += explain(error).splitlines()
        if lines:  # once each: `true` for an integer >= 2 fails pydantic's bound too
            text = "\n".join(dict.fromkeys(lines))
            raise PydanticCustomError(INVALID, "{lines}", {"lines": text}) from None
        return params

    @model_validator(mode="after")
    def _ppo_sizes_fit_a_rollout_batch(self) -> "PipelineParams":
        """Checked before any stage, one line per size that does not fit, on the sizes the run
        uses: checked on the sizes sent, a smoke run's own rollout_batch (16) was refused
        against tiny's minibatch_size (32), and a smoke minibatch_size of 24 passed, then
        failed the PPO stage after SFT and the RM trained."""
        from instructflow.flows.params_io import INVALID

        ppo = self.stage("ppo")
        rollout = f"ppo.rollout_batch = {ppo.rollout_batch} (profile {self.profile})"
        sizes = [  # (setting, its value, why it must fit in one rollout batch)
            ("processes", self.processes, "each process needs at least one rollout row"),
            (
                "ppo.minibatch_size",
                ppo.minibatch_size,
                "a minibatch is drawn from one rollout batch",
            ),
        ]
        lines = [
            f"{name} = {value} is more than {rollout}: {why}"
            for name, value, why in sizes
            if value > ppo.rollout_batch
        ]
        if lines:
            raise PydanticCustomError(INVALID, "{lines}", {"lines": "\n".join(lines)})
        return self

    def stage(self, name: str) -> BaseModel:
        """A stage's config with the profile's sizes for every field the user did not set.

        A field sent is set, even at its (tiny-sized) default: `{"ppo": {"iterations": 150}}`
        under smoke asks for 150. A stage's part sent whole (every field) is a dump, not values
        picked by hand: the Prefect UI's run form sends every field it shows, defaults
        included, as `params --example` and a run's dumped settings have them; a smoke run
        from one must still get smoke sizes, so there a field at its default reads as not set.
        """
        config: BaseModel = getattr(self, name)
        overrides = {
            k: v
            for k, v in PROFILE_OVERRIDES[self.profile].get(name, {}).items()
            if _not_set(config, k)
        }
        return config.model_copy(update=overrides)

    @property
    def wants_side_by_side(self) -> bool:
        """`side_by_side` as the run takes it: empty is true, except on the smoke profile."""
        return self.side_by_side if self.side_by_side is not None else self.profile != "smoke"

    def settings_in_force(self) -> dict[str, Any]:
        """Every setting as the run uses it (a stage's with its profile's sizes), flat:
        `ppo.lr` -> 3e-05. The parent MLflow run's params, so that runs compare by them."""
        flat: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for key, item in value.items():
                    walk(f"{prefix}{key}.", item)
            else:
                flat[prefix.rstrip(".")] = value

        for name, value in self:
            walk(
                f"{name}.", self.stage(name).model_dump() if isinstance(value, BaseModel) else value
            )
        return flat


def _not_set(config: BaseModel, field: str) -> bool:
    """Whether the user left a stage config's `field` for the profile to size (see `stage`)."""
    if field not in config.model_fields_set:
        return True
    sent_whole = config.model_fields_set >= set(type(config).model_fields)
    return sent_whole and getattr(config, field) == type(config).model_fields[field].get_default(
        call_default_factory=True
    )
