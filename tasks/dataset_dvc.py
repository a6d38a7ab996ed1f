"""`instructflow data add DIR`: put a user's dataset under DVC, after it validates.

`dvc add DIR` writes DIR.dvc beside it (the user commits that file, as with
data.dvc) and stores the tables in DVC's cache; `dvc push` copies them to the
default remote when the project has one. A run records each table's md5
(report, MLflow tags, the registered challenger), so a registered policy
names exactly the tables it was trained on.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from instructflow.tasks.dataset import load_dataset
from instructflow.tasks.dataset_files import missing_folder
from instructflow.tasks.tables import TableError


class OutsideProject(ValueError):
    """The dataset is not inside the project's DVC repository."""


def dvc_root(folder: Path) -> Path:
    """The DVC repository `folder` is in; OutsideProject, saying how to make one, if none.

    A folder that is gone (DIR.dvc beside it records it) is looked up from its nearest
    existing parent: DVC's own lookup refuses a path that is not there.
    """
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    folder = folder.resolve()
    start = next(path for path in (folder, *folder.parents) if path.is_dir())
    try:
        return Path(Repo.find_root(str(start)))
    except NotDvcRepoError as error:
        # Uncaught, DVC's error ended `data verify` (and a run on the dataset) in a traceback.
        raise OutsideProject(
            f"{folder} is not in a DVC project (no .dvc/ folder in it or above): run `dvc init`"
            " in your project's root (in a git repository; `dvc init --no-scm` without one),"
            f" then `instructflow data add {folder}` puts the dataset under DVC"
        ) from error


def add_dataset(root: Path, folder: Path) -> dict:
    """Validate `folder`, `dvc add` it in the project at `root`; returns the .dvc file and table md5s."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    folder = folder.resolve()
    if (missing := missing_folder(folder)) is not None:
        raise TableError([missing])
    if not folder.is_relative_to(root.resolve()):
        raise OutsideProject(
            f"{folder} is outside the project {root}: DVC tracks paths inside its repository;"
            f" copy it into {root} and add the copy, or run on it unversioned (`instructflow run"
            f" --data {folder}`: its report records each table's md5)"
        )
    try:
        Repo.find_root(str(root))
    except NotDvcRepoError as error:  # pip-installed, run from a folder of one's own
        # Uncaught, DVC's error ended the command in a traceback.
        raise OutsideProject(
            f"{root} is not a DVC repository (no .dvc/ folder here or above): run `dvc init`"
            " there (in a git repository; `dvc init --no-scm` without one), or set"
            " INSTRUCTFLOW_ROOT to your project's checkout"
        ) from error
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


def dataset_version(folder: Path) -> dict | None:
    """What DIR.dvc records for the dataset and whether the folder still matches it; None if never added.

    A run on a dataset that differs from its .dvc file is refused (as on the
    embedded world's data.dvc) unless allow_data_mismatch is set.
    """
    from dvc.repo import Repo
    from dvc_data.hashfile.build import build

    folder = folder.resolve()
    dvc_file = folder.with_name(folder.name + ".dvc")
    if not dvc_file.exists():
        return None
    recorded = yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"]
    repo = Repo(str(dvc_root(folder)))
    try:
        _, _, obj = build(repo.cache.local, str(folder), repo.fs, "md5", ignore=repo.dvcignore)
        current = obj.hash_info.value
    finally:
        repo.close()
    return {
        "dvc_file": str(dvc_file),
        "dvc_md5": recorded,
        "md5": current,
        "matches": current == recorded,
    }


def version_tags(folder: Path, allow_mismatch: bool) -> dict[str, str]:
    """MLflow tags naming the dataset's DVC version; refuses a dataset that differs from its .dvc file."""
    from instructflow.tasks.data_version import DataMismatchError

    version = dataset_version(folder)
    if version is None:
        return {"dvc_data_md5": "untracked (no .dvc file: instructflow data add DIR)"}
    if not version["matches"] and not allow_mismatch:
        raise DataMismatchError(
            f"{folder} does not match {version['dvc_file']}: it records md5 {version['dvc_md5']} but the"
            f" folder hashes to {version['md5']}. Record the new version with `instructflow data add"
            f" {folder}` (and commit the .dvc file), restore it with `dvc checkout`, or pass"
            " --allow-data-mismatch to run on it anyway."
        )
    # The version the run reads (as data.version_tags on the embedded world); on a mismatch
    # the .dvc file's, which it does not read, beside it.
    tags = {"dvc_data_md5": version["md5"], "data_mismatch": str(not version["matches"]).lower()}
    if not version["matches"]:
        tags["data_dvc_recorded_md5"] = version["dvc_md5"]
    return tags


# DVC's name for a workspace change (dvc data status) -> how `data verify` says it.
CHANGE_WORDS = {"modified": "changed", "deleted": "missing", "added": "added"}


def differences(folder: Path) -> list[str]:
    """One line per file of `folder` that differs from what its .dvc file records
    ("changed: mine/preferences.jsonl"; paths relative to the DVC root), by DVC's own
    `dvc data status --granular`; empty when DVC sees no change.

    DVC lists a recorded version's files from the directory object in its cache: without
    it (a version added elsewhere and not fetched) it cannot say which files differ, and
    one line says so instead.
    """
    from dvc.repo import Repo

    folder = folder.resolve()
    repo = Repo(str(dvc_root(folder)))
    try:
        # Relative to the root: DVC turns a target into an index key relative to the cwd,
        # which is the root's key for a relative path whatever the cwd is.
        target = folder.relative_to(repo.root_dir).as_posix()
        status = repo.data_status(targets=[target], granular=True, with_renames=False)
    finally:
        repo.close()
    changes = status["uncommitted"]
    lines = [
        f"{word}: {path}"
        for kind, word in CHANGE_WORDS.items()
        for path in sorted(changes.get(kind, []))
        if not path.endswith(("/", "\\"))  # the folder itself, or a subfolder, as a whole
    ]
    if not lines and changes.get("modified"):
        lines.append(
            f"{target}/ differs, but DVC's cache lacks the file list of the recorded version,"
            f" so which files differ is unknown: `dvc fetch {target}.dvc` gets it from the remote"
        )
    return lines
