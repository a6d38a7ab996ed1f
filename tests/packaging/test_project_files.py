"""What a user of a well-kept Python project expects around the code: local state per checkout,
Makefile targets that exist, a licence in the metadata."""

import os
import re
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _prefect_home(root: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_HOME", "INSTRUCTFLOW_ROOT")}
    code = (
        "from instructflow.tasks.env import apply_defaults; apply_defaults();"
        "from prefect.settings import get_current_settings as s; print(s().home)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_two_checkouts_keep_their_own_prefect_home(tmp_path):
    # given two project roots side by side
    roots = [tmp_path / "one", tmp_path / "two"]
    for root in roots:
        root.mkdir()
        (root / "data.dvc").write_text("outs: []\n")
    # then each one's Prefect home (database, runs, concurrency slots) is inside it
    homes = [_prefect_home(root) for root in roots]
    assert homes[0] == str(roots[0] / ".prefect")
    assert homes[1] == str(roots[1] / ".prefect")


def test_every_target_make_help_lists_exists():
    listed = subprocess.run(
        ["make", "-s", "help"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    targets = {t for line in listed.splitlines() for t in re.findall(r"make ([a-z-]+)", line)}
    assert {"demo", "test", "clean", "clean-runs"} <= targets
    for target in sorted(targets):
        dry = subprocess.run(["make", "-n", target], cwd=REPO_ROOT, capture_output=True, text=True)
        assert dry.returncode == 0, (target, dry.stderr)


def test_make_clean_runs_asks_before_removing(tmp_path):
    # given a copy of the Makefile beside some run outputs
    (tmp_path / "Makefile").write_text((REPO_ROOT / "Makefile").read_text())
    (tmp_path / "runs").mkdir()
    # when the question is answered no, nothing is removed
    subprocess.run(["make", "-s", "clean-runs"], cwd=tmp_path, input="n\n", text=True)
    assert (tmp_path / "runs").exists()
    # and when answered yes, the folders are gone
    subprocess.run(["make", "-s", "clean-runs"], cwd=tmp_path, input="y\n", text=True, check=True)
    assert not (tmp_path / "runs").exists()


def test_licence_and_python_versions_in_the_metadata():
    meta = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "MIT" and (REPO_ROOT / "LICENSE").is_file()
    assert meta["requires-python"] == ">=3.11"
    assert any(c.startswith("Programming Language :: Python :: 3.1") for c in meta["classifiers"])


@pytest.mark.slow
def test_a_flow_run_in_one_checkout_is_recorded_in_its_own_prefect_database_only(tmp_path):
    # given two project roots side by side, and no Prefect server named (ephemeral mode)
    roots = [tmp_path / "one", tmp_path / "two"]
    for root in roots:
        root.mkdir()
        (root / "data.dvc").write_text("outs: []\n")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PREFECT_") and k != "INSTRUCTFLOW_ROOT"
    }
    code = (
        "from instructflow.tasks.env import apply_defaults; apply_defaults()\n"
        "from prefect import flow\n"
        "flow(name='side-by-side')(lambda: 1)()\n"
    )
    # when a flow runs in the first
    subprocess.run(
        [sys.executable, "-c", code], cwd=roots[0], env=env, check=True, capture_output=True
    )
    # then the first checkout's Prefect database holds the run, and the second has no database
    with sqlite3.connect(roots[0] / ".prefect" / "prefect.db") as db:
        names = [row[0] for row in db.execute("SELECT name FROM flow")]
    assert names == ["side-by-side"]
    assert not (roots[1] / ".prefect").exists()
