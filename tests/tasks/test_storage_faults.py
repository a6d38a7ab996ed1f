"""A full disk or a refused write mid-run is told as such (not as a lost service), never retried.

The checkpoint case fills a real file system: a tmpfs of 256 KiB, mounted
where the mount is allowed (the test is skipped, saying so, where it is not).
"""

import errno

import pytest
import torch

from instructflow.models.checkpoints import CheckpointStore
from instructflow.tasks.stage import is_permanent
from instructflow.tasks.storage_faults import (
    full_disk_error,
    is_storage_fault,
    storage_fault_message,
)
from tests.conftest import small_filesystem


@pytest.fixture
def small_disk(tmp_path):
    """A folder on a 256 KiB file system of its own."""
    with small_filesystem(tmp_path / "small", "256k") as folder:
        yield folder


def test_a_checkpoint_on_a_full_disk_raises_the_os_error_and_leaves_no_half_checkpoint(small_disk):
    store = CheckpointStore(small_disk / "resume", every=1)
    store.save(1, {"w": torch.zeros(1_000)})  # fits
    # when a checkpoint larger than the space left is saved
    with pytest.raises(OSError) as raised:
        store.save(2, {"w": torch.zeros(1_000_000)})
    # then it is the OS's own "no space" error, naming the file (torch alone says "unexpected pos")
    assert raised.value.errno == errno.ENOSPC
    assert str(small_disk / "resume") in raised.value.filename
    # and the earlier checkpoint is intact, with no half-written one beside it
    assert [p.name for p in store.checkpoints()] == ["step-000000001"]
    assert not list((small_disk / "resume").glob(".tmp-*"))
    assert store.load()["w"].shape == (1_000,)
    # and the message says the disk is full, where, and how much is left there
    message = storage_fault_message(raised.value)
    assert message.startswith(f"the disk is full while writing {small_disk / 'resume'}")
    assert "MiB free there" in message and "run the same command again" in message


class SafetensorError(Exception):
    """What safetensors raises (its text as measured on a full tmpfs)."""


@pytest.mark.parametrize(
    ("error", "full"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), True),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
        (
            SafetensorError(
                "Error while serializing: I/O error: No space left on device (os error 28)"
            ),
            True,
        ),
        (RuntimeError("(sqlite3.OperationalError) database or disk is full"), True),
        (OSError(errno.EIO, "Input/output error"), False),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), False),
        (RuntimeError("the registry is down"), False),
    ],
)
def test_what_counts_as_a_full_disk(error, full):
    assert (full_disk_error(error) is not None) is full
    # and a full disk is never retried (the same stage would write the same bytes again)
    assert is_permanent(error) is full


def test_a_full_disk_without_a_file_name_shows_each_run_folders_free_space(
    small_disk, tmp_path, monkeypatch
):
    # given a project whose reports/ is on a full file system of its own
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(tmp_path))
    (tmp_path / "runs").mkdir()
    (small_disk / "filler").write_bytes(b"x" * 240 * 1024)
    (tmp_path / "reports").symlink_to(small_disk)
    # when a write that names no file (safetensors, a plain write()) finds the disk full
    error = SafetensorError("Error while serializing: I/O error: No space left on device")
    message = storage_fault_message(error)
    # then the message gives each folder's free space, the full one first
    assert message.startswith("the disk is full: free space (reports/ 0 MiB free, runs/ mlflow/ ")
    assert message.endswith(
        "GiB free) and run the same command again: finished stages and checkpoints are kept."
    )


def test_a_full_disk_wrapped_by_another_error_is_found_in_its_chain():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/x/model.safetensors")
        except OSError as inner:
            raise RuntimeError("saving the model failed") from inner
    except RuntimeError as outer:
        assert full_disk_error(outer).filename == "/x/model.safetensors"


def test_the_cli_says_disk_full_not_lost_service(capsys, tmp_path):
    from instructflow.flows.cli import _explain

    code = _explain(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "f")))
    err = capsys.readouterr().err
    assert code == 3
    assert err.startswith(f"instructflow: the disk is full while writing {tmp_path / 'f'}")
    assert "lost a service" not in err


def test_a_write_the_file_system_refuses_is_named_with_why(tmp_path):
    # given a folder on a read-only file system
    with small_filesystem(tmp_path / "ro", "64k", read_only=True) as folder:
        store = CheckpointStore(folder / "resume", every=1)
        with pytest.raises(OSError) as raised:
            store.save(1, {"w": torch.zeros(10)})
    # then the error is a storage fault, never retried, told in one line with the folder
    assert raised.value.errno == errno.EROFS and is_storage_fault(raised.value)
    assert is_permanent(raised.value)
    message = storage_fault_message(raised.value)
    assert message == (
        f"cannot write {folder / 'resume'}: read-only file system; make it writable and "
        "run the same command again: finished stages and checkpoints are kept."
    )


def test_a_refused_write_without_a_file_is_not_taken_for_one():
    # a socket's EPERM (no file name) is left to the other explanations
    assert not is_storage_fault(PermissionError(errno.EPERM, "Operation not permitted"))


def test_a_report_that_does_not_fit_is_named_and_leaves_no_cut_file(small_disk):
    from instructflow.tasks.report import write_whole

    # given a report.md of a finished run on a disk with less room than the new one needs
    target = small_disk / "report.md"
    target.write_text("the old report\n")
    (small_disk / "filler").write_bytes(b"x" * 200 * 1024)
    # when a larger report is written there
    with pytest.raises(OSError) as e:
        write_whole(target, "a figure\n" * 10_000)
    # then the error is a full disk naming the report, and the old file is as it was
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(target)
    assert storage_fault_message(e.value).startswith(f"the disk is full while writing {target}")
    assert target.read_text() == "the old report\n"
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "report.md"]


def test_a_command_without_stages_is_not_told_its_stages_are_kept(tmp_path):
    from instructflow.flows.explained_errors import explanation

    # given a full disk met by `eval import` or `promote` (no stages, no checkpoints)
    error = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "report.md"))
    # when the command line explains it
    status, line = explanation(error, resumable=False)
    # then the line says to run it again, and promises no finished stages or checkpoints
    assert line.endswith("free space and run the same command again."), line
    assert "checkpoints" not in line
    # while a run (resumable) is told what it keeps
    assert explanation(error)[1].endswith("finished stages and checkpoints are kept.")
