"""Fixtures shared by the test suite.

- `prefect_harness`: one temporary Prefect server (and result store) for the
  whole session, started only by tests that ask for it.
- `generated_root`: a DVC project in a temporary folder whose data/ was
  generated once per session from the default seed (all profiles, ~10 s).
- `make_project`: a fresh project root (DVC repo, the repository's data.dvc
  and .dvc/config), optionally with a copy of the generated data/.
"""

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Prefect's server migrates its database on first start (~30 s on a small machine).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
# DVC would try to send usage analytics over a network the tests do not have.
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A temporary Prefect server and result store, shared by every flow test.

    Cached task results go to a temporary folder too: a test's result must
    never become a cache hit for a real run in the checkout (same cache keys).
    """
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    results = tmp_path_factory.mktemp("prefect-results")
    with (
        prefect_test_harness(server_startup_timeout=180),
        temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: str(results)}),
    ):
        yield


def init_dvc_project(root: Path) -> Path:
    """Make `root` a DVC project (no git) with the repository's data.dvc and DVC config."""
    from dvc.repo import Repo

    root.mkdir(parents=True, exist_ok=True)
    Repo.init(str(root), no_scm=True).close()
    shutil.copy2(REPO_ROOT / "data.dvc", root / "data.dvc")
    # The config names a local remote (../.dvcstore, relative to .dvc/), which
    # does not exist under a temporary root: `dvc pull` fails there, as on a fresh clone.
    # Copying it drops the `no_scm` that init wrote, so that is set again.
    from configobj import ConfigObj

    config = ConfigObj(str(root / ".dvc" / "config"))
    no_scm = config.get("core", {}).get("no_scm", "True")
    shutil.copy2(REPO_ROOT / ".dvc" / "config", root / ".dvc" / "config")
    config = ConfigObj(str(root / ".dvc" / "config"))
    config.setdefault("core", {})["no_scm"] = no_scm
    config.write()
    return root


@pytest.fixture(scope="session")
def generated_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project root whose data/ was generated from the default seed. Treat as read-only."""
    from tasks import data

    root = init_dvc_project(tmp_path_factory.mktemp("generated"))
    data.generate(root)
    return root


@pytest.fixture(scope="session")
def make_project(
    tmp_path_factory: pytest.TempPathFactory, generated_root: Path
) -> Callable[..., Path]:
    """make_project(with_data=True) -> a fresh project root, data/ copied from generated_root."""

    def make(with_data: bool = True) -> Path:
        root = init_dvc_project(tmp_path_factory.mktemp("project"))
        if with_data:
            shutil.copytree(generated_root / "data", root / "data")
        return root

    return make


def flip_one_byte(path: Path, offset: int = 10) -> None:
    """Change one byte of a file (a letter's case), keeping it valid JSONL."""
    blob = bytearray(path.read_bytes())
    while not chr(blob[offset]).isalpha():
        offset += 1
    blob[offset] ^= 0x20
    path.write_bytes(bytes(blob))


@pytest.fixture(scope="session")
def change_one_byte() -> Callable[[Path], None]:
    return flip_one_byte
