"""`instructflow data add DIR`: put a user's dataset under DVC, after it validates.

`dvc add DIR` writes DIR.dvc beside it (the user commits that file, as with
data.dvc) and stores the tables in DVC's cache; `dvc push` copies them to the
default remote when the project has one. A run records each table's md5
(report, MLflow tags, the registered challenger), so a registered policy
names exactly the tables it was trained on.
"""

from __future__ import annotations

from pathlib import Path

from tasks.dataset import load_dataset


class OutsideProject(ValueError):
    """The dataset is not inside the project's DVC repository."""


def add_dataset(root: Path, folder: Path) -> dict:
    """Validate `folder`, `dvc add` it in the project at `root`; returns the .dvc file and table md5s."""
    from dvc.repo import Repo

    folder = folder.resolve()
    if not folder.is_relative_to(root.resolve()):
        raise OutsideProject(
            f"{folder} is outside the project {root}: DVC tracks paths inside its repository"
        )
    summary = load_dataset(folder).summary  # refuses a bad dataset before it is versioned
    repo = Repo(str(root))
    try:
        repo.add([str(folder)])
        pushed = bool(repo.config.get("core", {}).get("remote"))
        if pushed:
            repo.push(targets=[str(folder) + ".dvc"])
    finally:
        repo.close()
    return {
        "dvc_file": str(folder) + ".dvc",
        "pushed": pushed,
        "md5s": {name: t["md5"] for name, t in summary["tables"].items()},
    }
