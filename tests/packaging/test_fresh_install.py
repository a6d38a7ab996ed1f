"""The project as a user installs it: a wheel, in a fresh venv (issue 22, item 1).

The wheel is built from a copy of the package folders and pyproject.toml (the
checkout gets no build/ or egg-info), and installed with `pip install --no-deps`
into a venv made by `python -m venv --without-pip`, which sees neither this
checkout nor its editable install. The dependencies are not downloaded again:
a folder of links to every entry of this interpreter's site-packages, less the
project's own (its dist-info, the editable finder and every .pth file, so no
finder is installed), is put on the fresh venv's path by a .pth file. The
checks run under `python -I` (no PYTHONPATH, no current directory on sys.path)
from an empty folder.
"""

import json
import os
import pkgutil
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from instructflow.tasks.env import defaults

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("flows", "tasks", "models", "world")
CHECK = Path(__file__).with_name("fresh_install_check.py")

pytestmark = pytest.mark.slow


def _run(*command: str | Path, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=300, **kwargs
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def _own_entry(name: str) -> bool:
    """An entry of site-packages that belongs to the project's (editable) install."""
    return name.startswith(("instructflow", "__editable__")) or name.endswith(".pth")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("fresh-install")
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO_ROOT / name, source / name)
    for package in (*PACKAGES, "instructflow"):  # instructflow/: its __main__.py only
        shutil.copytree(
            REPO_ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    # This interpreter's setuptools builds it (no build isolation: no index is needed).
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--quiet", "-w", tmp / "dist", source)  # fmt: skip
    (wheel,) = (tmp / "dist").glob("instructflow-*.whl")

    venv = tmp / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    purelib = Path(
        _run(
            python, "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        ).stdout.strip()
    )
    deps = tmp / "deps"
    deps.mkdir()
    for base in map(Path, site.getsitepackages()):
        for entry in base.iterdir():
            if not _own_entry(entry.name) and not (deps / entry.name).exists():
                (deps / entry.name).symlink_to(entry)
    (purelib / "dependencies.pth").write_text(f"{deps}\n")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
         "--no-index", "--quiet", wheel)  # fmt: skip

    entrypoints = [
        d["entrypoint"]
        for spec in ("prefect.yaml", "prefect.workpools.yaml")
        for d in yaml.safe_load((REPO_ROOT / spec).read_text())["deployments"]
    ]
    empty = tmp / "cwd"
    empty.mkdir()
    # Without the variables the CLI sets (tests/conftest.py set them in this process), so
    # a module that set one on import would be caught writing it.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "INSTRUCTFLOW_")) and k not in defaults()
    }
    check = _run(python, "-I", CHECK, *entrypoints, cwd=empty, env=env)
    cli = subprocess.run(
        [str(venv / "bin" / "instructflow"), "run", "--help"],
        cwd=empty, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    module = subprocess.run(
        [str(python), "-I", "-m", "instructflow", "run", "--help"],
        cwd=empty, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return {
        "wheel": wheel,
        "purelib": purelib,
        "report": json.loads(check.stdout.strip().splitlines()[-1]),
        "cli": cli,
        "module": module,
        "entrypoints": entrypoints,
    }


def test_the_wheel_holds_one_namespace(fresh):
    with zipfile.ZipFile(fresh["wheel"]) as wheel:
        tops = {name.split("/")[0] for name in wheel.namelist()}
    assert tops == {"instructflow", fresh["wheel"].name.split("-py")[0] + ".dist-info"}


def test_installed_it_imports_as_instructflow_and_nothing_generic(fresh):
    report = fresh["report"]
    assert Path(report["flows_file"]).is_relative_to(fresh["purelib"] / "instructflow")
    assert report["generic_importable"] == []  # import models, import tasks... fail


def test_every_package_of_the_tree_is_installed(fresh):
    # a new sub-package missing from pyproject's list would be left out of the wheel
    in_tree = set()
    for package in PACKAGES:
        in_tree.add(f"instructflow.{package}")
        for info in pkgutil.walk_packages(
            [str(REPO_ROOT / package)], prefix=f"instructflow.{package}."
        ):
            in_tree.add(info.name)
    assert set(fresh["report"]["modules"]) == in_tree


def test_importing_every_module_sets_no_environment_variable(fresh):
    report = fresh["report"]
    assert report["writes_by_project"] == []
    # whatever changed was changed by a dependency's import (pandera sets two
    # Spark variables), and was seen to be
    assert set(report["changed"]) <= set(report["writes_by_others"]), report["writers"]
    # the console script's module imports neither Prefect nor huggingface_hub, so the
    # CLI sets their environment before they read it
    assert report["heavy_before_main"] == []


def test_console_script_and_deployment_entrypoints_use_the_namespace(fresh):
    assert fresh["cli"].returncode == 0, fresh["cli"].stderr[-2000:]
    assert "--profile" in fresh["cli"].stdout
    assert fresh["entrypoints"] and all(e.startswith("instructflow.") for e in fresh["entrypoints"])
    assert set(fresh["report"]["entrypoints"].values()) == {"Flow"}


def test_python_m_instructflow_is_the_console_script(fresh):
    assert fresh["module"].returncode == 0, fresh["module"].stderr[-2000:]
    assert fresh["module"].stdout == fresh["cli"].stdout
