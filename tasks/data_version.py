"""The DVC side of the data: which version data.dvc names, and whether data/ matches it.

A run must never train silently on data that differs from what git says it
should be: it restores data/ (dvc pull, or regeneration checked against
data.dvc) and refuses on a mismatch unless explicitly allowed.
"""

import logging
import sys
from contextlib import contextmanager
from pathlib import Path

import yaml

# DVC's usage analytics would try the network: DVC_NO_ANALYTICS is among the
# defaults the CLI and the flows set (instructflow.tasks.env), not set on import here.


class DataMismatchError(RuntimeError):
    """data/ differs from the version named in data.dvc."""


def tracked_md5(root: Path) -> str:
    """The md5 that data.dvc records for data/ (a DVC directory hash, ending in .dir)."""
    dvc_file = root / "data.dvc"
    if not dvc_file.exists():
        raise DataMismatchError(
            f"{dvc_file} is missing: run `instructflow data generate` to create data/ and data.dvc"
        )
    outs = yaml.safe_load(dvc_file.read_text())["outs"]
    return outs[0]["md5"]


def _repo(root: Path):
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Repo(str(root))
    except NotDvcRepoError:
        raise DataMismatchError(not_a_dvc_project(root)) from None


def not_a_dvc_project(root: Path) -> str | None:
    """Why `root` cannot be a project root (no .dvc/ there or above), or None when it can."""
    if any((folder / ".dvc").is_dir() for folder in [root, *root.parents]):
        return None
    dvc = Path(sys.executable).parent / "dvc"
    return (
        f"{root} is not a DVC project (no .dvc/ there or above): the project root "
        "(INSTRUCTFLOW_ROOT, else the working directory) must be a clone of this repository, "
        f"or a folder where `{dvc} init --no-scm` was run and data.dvc copied in"
    )


@contextmanager
def _opened(root: Path, repo=None):
    """The DVC repo given, else one opened here and closed after.

    Opening one costs about 0.05 s (its state database): the data gate
    hashes and stores data/ through one, as it runs at the start of every run.
    """
    if repo is not None:
        yield repo
        return
    repo = _repo(root)
    try:
        yield repo
    finally:
        repo.close()


def current_md5(root: Path, repo=None) -> str:
    """DVC's hash of data/ as it is on disk now (computed, not read from data.dvc)."""
    from dvc_data.hashfile.build import build

    with _opened(root, repo) as repo:
        _, _, obj = build(
            repo.cache.local, str(root / "data"), repo.fs, "md5", ignore=repo.dvcignore
        )
        return obj.hash_info.value


def verify(root: Path, keep: bool = False) -> str:
    """Return the md5 of data/ if it matches data.dvc; raise DataMismatchError otherwise.

    keep: then also store the matching data/ in DVC (store), warning if that fails.
    """
    expected = tracked_md5(root)
    if not (root / "data").is_dir():
        raise DataMismatchError(
            f"data/ is missing; data.dvc expects md5 {expected}: `dvc pull` fetches it from"
            " the DVC remote, `instructflow data generate` regenerates it (the default seed"
            " gives that version), and `instructflow run` does either by itself"
        )
    with _opened(root) as repo:
        actual = current_md5(root, repo)
        if actual == expected and keep:
            _store_or_warn(root, repo)
    if actual != expected:
        raise DataMismatchError(
            f"data/ does not match data.dvc: data.dvc records md5 {expected} but data/ hashes to {actual}. "
            # Not `dvc checkout`: a run stores data/ in DVC's cache only once it has matched
            # (store), so data/ edited before any run passed, or a cache lost since, makes
            # `dvc checkout --force` delete data/; removing it and running again always works.
            "To go back to the recorded version, remove data/ and run again (it is pulled "
            "from DVC's remote, else rebuilt from its seed and checked against data.dvc). "
            "To keep the change as a new version, run `.venv/bin/dvc add data` and commit data.dvc. "
            "Or pass --allow-data-mismatch to run on it anyway (the run is tagged as such)."
        )
    return actual


@contextmanager
def _dvc_warnings_silenced():
    """DVC's own loggers at ERROR for a while, restored after."""
    loggers = [logging.getLogger(name) for name in ("dvc", "dvc_data", "dvc_objects")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def pull(root: Path) -> bool:
    """Try to restore data/ from the DVC cache or remote; False if DVC raised.

    A failed pull is expected (a fresh clone has no DVC cache, and the default
    remote is a git-ignored folder of the checkout): the caller regenerates
    data/ and checks it against data.dvc. DVC's warnings about the missing
    files read as trouble on every first run, so they are silenced here.
    """
    repo = _repo(root)
    try:
        with _dvc_warnings_silenced():
            # DVC resolves targets against the cwd, not the repo
            repo.pull(targets=[str(root / "data.dvc")])
        return True
    except Exception:
        return False
    finally:
        repo.close()


def restore_source(root: Path) -> str:
    """Where `pull` restores data/ from: DVC's cache when it holds data.dvc's version, else
    the default remote, named with its URL (asked before pulling, which fills the cache)."""
    with _opened(root) as repo:
        try:
            cached = not _missing(repo.cache.local, tracked_md5(root))
        except DataMismatchError:  # no data.dvc: the pull fails and the gate says why
            cached = False
        if cached:
            return f"DVC cache {repo.cache.local_cache_dir}"
        name = repo.config["core"].get("remote")
        if not name:
            return "DVC's cache (no default remote)"
        return f"DVC remote '{name}' ({repo.config['remote'][name]['url']})"


def _missing(odb, md5: str) -> bool:
    """Whether a DVC object store lacks the directory `md5` or any file it lists.

    Checked object by object (stat calls on a local store) rather than by
    `dvc status`, which rehashes data/: this runs at the start of every run.
    """
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.tree import Tree

    if not odb.exists(md5):
        return True
    try:
        tree = Tree.load(odb, HashInfo("md5", md5))
    except Exception:  # an unreadable .dir object: store it again
        return True
    oids = {entry_hash.value for _, _, entry_hash in tree}
    return len(odb.oids_exist(oids)) != len(oids)


def _store_or_warn(root: Path, repo) -> None:
    """store, where a failure (a full disk, an unreachable remote) costs that, not the run."""
    from prefect.logging import get_logger

    logger = get_logger("instructflow")
    try:
        done = store(root, repo)
    except Exception as error:
        logger.warning(
            "data/ matches data.dvc, but storing it in DVC's cache and remote failed: %s", error
        )
    else:
        if done:
            logger.info("data/ (md5 %s): %s in DVC", tracked_md5(root), done)


def store(root: Path, repo=None) -> str:
    """Keep data/ (verified equal to data.dvc) in DVC's cache and default remote.

    A run that regenerated data/ left it only in the workspace: after a new
    version was recorded, `dvc checkout` of this data.dvc deleted data/ and
    failed for want of these files. `dvc commit` of the unchanged data.dvc
    fills the cache without rewriting the recorded md5 (and refuses, instead of
    prompting, should data/ differ); `dvc push` fills the remote. Each runs
    only when its store lacks an object, so a run on stored data pays a few
    stat calls. Returns what it did, for the log: "stored", "pushed",
    "stored, pushed" or "" (nothing was missing).
    """
    md5 = tracked_md5(root)
    dvc_file = root / "data.dvc"
    recorded = dvc_file.read_bytes()
    done = []
    try:
        with _opened(root, repo) as repo:
            if _missing(repo.cache.local, md5):
                # relink=False: data/ is already the workspace copy; no need to rewrite it
                repo.commit(str(dvc_file), force=False, relink=False)
                done.append("stored")
            if repo.config["core"].get("remote") and _missing(
                repo.cloud.get_remote_odb(None, "push"), md5
            ):
                with _dvc_warnings_silenced():
                    repo.push(targets=[str(dvc_file)])  # resolved against the cwd, not the repo
                done.append("pushed")
    finally:
        if dvc_file.read_bytes() != recorded:  # DVC re-dumps data.dvc: keep git's bytes
            dvc_file.write_bytes(recorded)
    return ", ".join(done)


def add_and_push(root: Path) -> str:
    """Record data/ as a new version in data.dvc and store it in the default remote."""
    repo = _repo(root)
    try:
        repo.add([str(root / "data")])  # DVC resolves paths against the cwd, not the repo
        repo.push(targets=["data.dvc"])
    finally:
        repo.close()
    return tracked_md5(root)
