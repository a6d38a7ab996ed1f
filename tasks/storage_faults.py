"""Storage that fails mid-run: a full disk, or a file system that refuses writes.

Said as such, never retried (a full disk stays full, a read-only folder stays
read-only), never taken for a lost service. A stage that cannot write its
checkpoint or MLflow its row raises OSError ENOSPC (EDQUOT: a quota), EACCES,
EPERM or EROFS, or SQLite's "database or disk is full" inside an MLflow
error. What helps is where it happened and that the same command resumes once
fixed (finished stages and checkpoints stay).
"""

import contextlib
import errno
import os
import shutil
from pathlib import Path

from instructflow.tasks.paths import mlflow_dir, reports_dir, runs_dir

FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "database or disk is full")
REFUSED_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS}
RESUME = "run the same command again: finished stages and checkpoints are kept."
REPEAT = "run the same command again."  # a command with no stages (eval import, promote)


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


def _size(free_bytes: int) -> str:
    mib = free_bytes / 2**20
    return f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"


def free_where_runs_write() -> str:
    """'reports/ 0 MiB free, runs/ mlflow/ 9.5 GiB free': each file system a run writes to
    (stage outputs, reports, MLflow's local store), the fullest first."""
    free: dict[int, tuple[list[str], int]] = {}
    for name, folder in (
        ("runs/", runs_dir()),
        ("reports/", reports_dir()),
        ("mlflow/", mlflow_dir()),
    ):
        folder = _existing(folder)
        names, _ = free.setdefault(os.stat(folder).st_dev, ([], shutil.disk_usage(folder).free))
        names.append(name)
    ordered = sorted(free.values(), key=lambda entry: entry[1])
    return ", ".join(f"{' '.join(names)} {_size(left)} free" for names, left in ordered)


def storage_fault_message(error: BaseException, resumable: bool = True) -> str | None:
    """One line for a full disk (what was being written, the space left there) or a refused
    write (the file and why), or None for any other error. `resumable`: a command that keeps
    finished stages and checkpoints (run, sweep); any other is simply repeated."""
    again = RESUME if resumable else REPEAT
    full = full_disk_error(error)
    if full is not None:
        filename = getattr(full, "filename", None)
        if filename:
            free = _size(shutil.disk_usage(_existing(Path(filename))).free)
            return f"the disk is full while writing {filename} ({free} free there): free space and {again}"
        # Without a file (safetensors and a plain write() name none): the free space of each
        # folder a run writes to, the fullest first, so the full one is seen.
        return f"the disk is full: free space ({free_where_runs_write()}) and {again}"
    refused = refused_write_error(error)
    if refused is not None:
        why = os.strerror(refused.errno).lower()
        return f"cannot write {refused.filename}: {why}; make it writable and {again}"
    return None


PROBE_BYTES = 2**16  # a report.json and report.md; the plots are bigger, but a full disk shows


def check_reports_writable() -> None:
    """Raise the OSError a report write would meet (read-only, permissions, full disk), so
    the gate stops before it writes the registry: the report, which describes the gate, is
    written after it, and a run that registered a version then failed at its report asked
    for the same command again (storage_fault_message says so in one line)."""
    folder = reports_dir()
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".write-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(bytes(PROBE_BYTES))
            f.flush()
            os.fsync(f.fileno())
    except OSError as error:  # named by the folder (the probe file is no file of the user's)
        raise OSError(error.errno, os.strerror(error.errno), str(folder)) from error
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
