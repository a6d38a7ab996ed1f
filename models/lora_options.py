"""The LoRA adapter settings (`LoraOptions`), apart from `instructflow.models.lora`.

Pydantic only, so that the run settings (flows/params.py) validate without
importing torch or peft; `instructflow.models.lora` applies them.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class LoraOptions(BaseModel):
    """LoRA adapters (peft): train low-rank updates instead of every weight.

    The one declaration of the adapter settings: the stage configs' `lora`
    field has this type, and `add_lora` reads it directly.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    r: int = Field(8, ge=1, description="Rank of each adapter's update matrix.")
    alpha: int = Field(16, ge=1, description="Adapter scale: updates are multiplied by alpha / r.")
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="Dropout on the adapters' input (0 keeps PPO exact)."
    )
    # at least one name: an empty list adapts nothing, and peft refused it only once the
    # stage was reached (after the stages before it had trained)
    target_modules: Annotated[list[str], Field(min_length=1)] | Literal["all-linear"] | None = (
        Field(
            None,
            description='Modules to adapt by name (a name or a list; each must name a module of the model); null: peft\'s default for the architecture (GPT-2: c_attn; Llama: q_proj, v_proj); "all-linear": every linear layer but the output.',
        )
    )

    @field_validator("target_modules", mode="before")
    @classmethod
    def _one_name_is_a_list(cls, value):
        # "c_attn" means the module c_attn (peft would read a lone string as a regular
        # expression, and the union's two errors read as gibberish on the form)
        if value == []:  # one refusal naming the field, not one per member of the union
            raise ValueError("an empty list adapts no module")
        return [value] if isinstance(value, str) and value != "all-linear" else value
