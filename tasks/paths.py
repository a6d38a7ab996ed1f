"""Where the project keeps things on disk.

Everything is relative to the project root: the directory holding data.dvc
(found upward from the working directory), or INSTRUCTFLOW_ROOT when set,
as a Prefect worker running from another directory needs.
"""

import os
from pathlib import Path


def project_root() -> Path:
    if env := os.environ.get("INSTRUCTFLOW_ROOT"):
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for folder in [here, *here.parents]:
        if (folder / "data.dvc").exists() or (folder / ".dvc").is_dir():
            return folder
    return here


def data_dir() -> Path:
    return project_root() / "data"


def runs_dir() -> Path:
    """Stage outputs (checkpoints, tables), one folder per cache key."""
    return project_root() / "runs"


def reports_dir() -> Path:
    return project_root() / "reports"


def mlflow_dir() -> Path:
    return project_root() / "mlflow"
