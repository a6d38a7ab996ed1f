"""Which project source files a stage runs: the import closure of its module.

A stage's cache key must change when any code it runs changes, and only
then. Hand-kept file lists drift (a stage starts importing a helper and the
list is not updated, so an edit there serves stale results), so the list is
computed: parse the stage's module with `ast`, follow every import that
lands in one of the project's packages, transitively, and hash those files.

Imports anywhere in a file count, including those inside functions (lazy
imports still run). Third-party packages are not followed: their versions
are pinned by constraints.txt, not by this key.
"""

import ast
import hashlib
from collections.abc import Iterable
from functools import cache
from pathlib import Path

# The folder holding flows/, tasks/, models/, world/: the checkout (an editable install),
# or site-packages/instructflow (a wheel). Modules are named as installed
# (instructflow.tasks.sft); their files are found by the folder names (tasks/sft.py).
ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("flows", "tasks", "models", "world")
NAMESPACE = "instructflow."  # installed name of the same packages


def _local(name: str) -> str:
    """A module name without the installed namespace prefix."""
    return name.removeprefix(NAMESPACE)


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The source file of project module `name` under `root`, or None if it is not one."""
    name = _local(name)
    if name.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(name: str, is_package: bool) -> str:
    return name if is_package else name.rpartition(".")[0]


@cache  # keyed by the source text, so an edited file is parsed again
def _imported_names(source: str, module: str, is_package: bool) -> frozenset[str]:
    """Every module name an import in `source` may refer to (absolute and relative)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = _package_of(module, is_package)
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = node.module or ""
            names.add(base)
            # `from instructflow.world import layout` imports the submodule ...world.layout.
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(names)


def _direct_imports(name: str, root: Path) -> frozenset[str]:
    """Project modules that module `name` imports directly, plus its parent packages."""
    file = module_file(name, root)
    assert file is not None
    found: set[str] = set()
    candidates = _imported_names(file.read_text(), _local(name), file.name == "__init__.py")
    for candidate in candidates:
        candidate = _local(candidate)
        parts = candidate.split(".")
        # Importing a.b.c runs a/__init__ and a/b/__init__ too.
        for end in range(1, len(parts) + 1):
            prefix = ".".join(parts[:end])
            if module_file(prefix, root) is not None:
                found.add(prefix)
    return frozenset(found)


def import_closure(modules: Iterable[str], root: Path = ROOT) -> list[Path]:
    """Source files of `modules` and of every project module they import, transitively, sorted."""
    seen: set[str] = set()
    todo = [_local(m) for m in modules]
    for name in todo:
        if module_file(name, root) is None:
            raise ValueError(f"{name!r} is not a module of the project packages {PACKAGES}")
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(_direct_imports(name, root) - seen)
    return sorted({module_file(name, root) for name in seen})  # type: ignore[type-var]


def import_closure_digest(*modules: str, root: Path = ROOT) -> str:
    """Hash of the source of `modules` and every project module they import (paths and bytes)."""
    digest = hashlib.sha256()
    for file in import_closure(modules, root):
        digest.update(str(file.relative_to(root)).encode() + b"\0")
        digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
