"""A full disk mid-run: said as such, never retried, never taken for a lost service.

A stage that cannot write its checkpoint or MLflow its row raises OSError
ENOSPC (or EDQUOT, a quota), or SQLite's "database or disk is full" inside an
MLflow error. Retrying cannot free space, and "lost a service" would send the
user after the wrong thing; what helps is where space went and that the same
command resumes once there is room (finished stages and checkpoints stay).
"""

import errno
import shutil
from pathlib import Path

FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "database or disk is full")


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


def _existing(path: Path) -> Path:
    """`path`, or its nearest folder that exists (a half-written file is removed on failure)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def disk_full_message(error: BaseException, root: Path) -> str | None:
    """One line for a full disk (what was being written, the space left there), or None."""
    full = full_disk_error(error)
    if full is None:
        return None
    filename = getattr(full, "filename", None)
    where = f" while writing {filename}" if filename else ""
    place = _existing(Path(filename)) if filename else root
    free_mb = shutil.disk_usage(place).free / 2**20
    return (
        f"the disk is full{where} ({free_mb:.0f} MiB free there): "
        "free space (stage outputs are under runs/<stage>/, MLflow's artifacts under mlflow/) "
        "and run the same command again: finished stages and checkpoints are kept."
    )
