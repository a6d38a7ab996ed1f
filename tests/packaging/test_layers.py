"""The layers import downwards only: flows -> tasks -> models, world (README, "Architecture").

world/ and models/ know nothing of the pipeline or of Prefect and MLflow, so
the world can be generated and the math tested without either.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("world", "models", "tasks", "flows")
# What each layer may import of the project, besides itself.
ALLOWED = {
    "world": set(),
    "models": set(),
    "tasks": {"models", "world"},
    "flows": {"tasks", "models", "world"},
}
ORCHESTRATION = ("prefect", "mlflow")
NO_ORCHESTRATION = ("world", "models")


def imported_modules(source: str) -> set[str]:
    """Absolute module names a source file imports (relative imports stay inside a layer)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module)
    return names


def violations(layer: str, source: str) -> list[str]:
    """The imports in `source` (a module of `layer`) that go against the layers."""
    found = []
    for name in sorted(imported_modules(source)):
        parts = name.split(".")
        if parts[0] == "instructflow" and len(parts) > 1 and parts[1] in LAYERS:
            if parts[1] != layer and parts[1] not in ALLOWED[layer]:
                found.append(name)
        elif layer in NO_ORCHESTRATION and parts[0] in ORCHESTRATION:
            found.append(name)
    return found


def test_every_module_imports_only_its_own_layer_and_those_below():
    found = {
        str(file.relative_to(ROOT)): bad
        for layer in LAYERS
        for file in sorted((ROOT / layer).rglob("*.py"))
        if (bad := violations(layer, file.read_text()))
    }
    assert found == {}


def test_the_check_sees_an_upward_import_and_orchestration_in_the_math():
    source = (
        "import mlflow\nfrom instructflow.tasks import layout\nfrom instructflow.models import lm\n"
    )
    assert violations("world", source) == ["instructflow.models", "instructflow.tasks", "mlflow"]
    assert violations("models", "from prefect import task\n") == ["prefect"]
    assert violations("tasks", source) == []
    assert violations("tasks", "from instructflow.flows.params import PipelineParams\n") == [
        "instructflow.flows.params"
    ]
