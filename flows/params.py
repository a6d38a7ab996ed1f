"""The pipeline's parameters: one pydantic model, which Prefect turns into the UI's run form.

Every field is documented where it is declared (the description shows in the
form). Stage configs nest under their stage's name.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PipelineParams(BaseModel):
    """Parameters of one `rlhf_pipeline` run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    profile: Literal["smoke", "tiny", "small"] = Field(
        "tiny", description="Size of the embedded world and of training: smoke (about a minute), tiny (minutes), small."
    )
    seed: int = Field(0, description="Seed for training and sampling (the data's own seed is part of the DVC data version).")
    base_model: str | None = Field(
        None, description="A local Hugging Face causal-LM directory to start from. Empty: train a small GPT-2 on the world's corpus."
    )
    allow_data_mismatch: bool = Field(
        False, description="Run even if data/ differs from the version in data.dvc (the run is tagged data_mismatch=true)."
    )
