"""The code's shape, checked: one declaration per configuration field, and small modules.

- Configuration classes (pydantic models and frozen dataclasses in models/,
  tasks/ and flows/) may not declare more than 3 field names in common: a
  setting is declared once, with its description and default, and a class
  that needs it inherits it (or holds the class that declares it).
  Each class is compared on the fields it declares itself, so a stage config
  that extends the math's settings (instructflow.tasks.ppo_config.PPOStageConfig over
  instructflow.models.ppo_config.PPOHyper) shares nothing with them, while a subclass that
  re-declared an inherited field would count.
- No module in models/, tasks/ or flows/ is over 400 lines.
"""

import dataclasses
import importlib
import inspect
import itertools
import pkgutil
from pathlib import Path

from pydantic import BaseModel

REPO_ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("models", "tasks", "flows")
MAX_SHARED = 3
MAX_LINES = 400


def own_fields(cls: type) -> set[str] | None:
    """Field names `cls` declares itself, or None if it is not a configuration class."""
    annotations = set(inspect.get_annotations(cls))
    if issubclass(cls, BaseModel):
        return set(cls.model_fields) & annotations
    if dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen:
        return {f.name for f in dataclasses.fields(cls)} & annotations
    return None


def config_classes() -> dict[str, set[str]]:
    found = {}
    for layer in LAYERS:
        for info in pkgutil.walk_packages(
            [str(REPO_ROOT / layer)], prefix=f"instructflow.{layer}."
        ):
            module = importlib.import_module(info.name)
            for name, obj in vars(module).items():
                if inspect.isclass(obj) and obj.__module__ == module.__name__:
                    fields = own_fields(obj)
                    if fields is not None:
                        found[f"{module.__name__}.{name}"] = fields
    return found


def test_no_two_config_classes_declare_more_than_three_field_names_in_common() -> None:
    classes = config_classes()
    assert (
        "instructflow.tasks.ppo_config.PPOStageConfig" in classes
        and "instructflow.tasks.sft_config.SFTConfig" in classes
    )
    shared = {
        (a, b): sorted(fa & fb)
        for (a, fa), (b, fb) in itertools.combinations(sorted(classes.items()), 2)
        if len(fa & fb) > MAX_SHARED
    }
    assert shared == {}


def test_the_check_counts_a_redeclared_field_set() -> None:
    # given a settings class and a copy that re-declares four of its fields (one with a new default)
    class Settings(BaseModel):
        lr: float = 1e-4
        epochs: int = 2
        batch_size: int = 16
        seed: int = 0

    class Copy(BaseModel):
        lr: float = 2e-5
        epochs: int = 2
        batch_size: int = 16
        seed: int = 0

    class Extends(Settings):
        eval_every: int = 5

    # then the copy shares four names, the subclass none of its own
    assert own_fields(Settings) & own_fields(Copy) == {"lr", "epochs", "batch_size", "seed"}
    assert own_fields(Extends) == {"eval_every"}


def test_no_module_in_models_tasks_flows_is_over_400_lines() -> None:
    sizes = {
        str(path.relative_to(REPO_ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for layer in LAYERS
        for path in sorted((REPO_ROOT / layer).rglob("*.py"))
    }
    assert len(sizes) > 30
    assert {path: n for path, n in sizes.items() if n > MAX_LINES} == {}
