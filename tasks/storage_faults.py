"""Storage that fails mid-run: a full disk, or a file system that refuses writes.

Said as such, never retried (a full disk stays full, a read-only folder stays
read-only), never taken for a lost service. A stage that cannot write its
checkpoint or MLflow its row raises OSError ENOSPC (EDQUOT: a quota), EACCES,
EPERM or EROFS, or SQLite's "database or disk is full" inside an MLflow
error. What helps is where it happened and that the same command resumes once
fixed (finished stages and checkpoints stay).
"""

import errno
import os
import shutil
from pathlib import Path

FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "database or disk is full")
REFUSED_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS}
RESUME = "run the same command again: finished stages and checkpoints are kept."


def _chain(error: BaseException):
    """The error and those it was raised from or during (MLflow and Prefect wrap errors)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def full_disk_error(error: BaseException) -> BaseException | None:
    """The error in `error`'s chain that says the disk is full, or None."""
    for link in _chain(error):
        if isinstance(link, OSError) and link.errno in FULL_ERRNOS:
            return link
        if any(text in str(link) for text in FULL_TEXTS):
            return link
    return None


def refused_write_error(error: BaseException) -> OSError | None:
    """The error in `error`'s chain where the file system refused (permissions, read-only)."""
    for link in _chain(error):
        if isinstance(link, OSError) and link.errno in REFUSED_ERRNOS and link.filename:
            return link
    return None


def is_storage_fault(error: BaseException) -> bool:
    return full_disk_error(error) is not None or refused_write_error(error) is not None


def _existing(path: Path) -> Path:
    """`path`, or its nearest folder that exists (a half-written file is removed on failure)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def storage_fault_message(error: BaseException) -> str | None:
    """One line for a full disk (what was being written, the space left there) or a refused
    write (the file and why), or None for any other error."""
    full = full_disk_error(error)
    if full is not None:
        filename = getattr(full, "filename", None)
        # Without a file (safetensors names none) the full file system is unknown: a figure
        # for the project root's could be another disk's.
        where = (
            f" while writing {filename} "
            f"({shutil.disk_usage(_existing(Path(filename))).free / 2**20:.0f} MiB free there)"
            if filename
            else ""
        )
        return (
            f"the disk is full{where}: free space (stage outputs are under runs/<stage>/, "
            f"MLflow's artifacts under mlflow/) and {RESUME}"
        )
    refused = refused_write_error(error)
    if refused is not None:
        why = os.strerror(refused.errno).lower()
        return f"cannot write {refused.filename}: {why}; make it writable and {RESUME}"
    return None
