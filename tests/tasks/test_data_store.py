"""Every data version a run has used comes back with `dvc checkout` and `dvc pull`."""

import filecmp
import shutil
from pathlib import Path

from dvc.repo import Repo

from instructflow.tasks import data, data_version


def _same_tree(left: Path, right: Path) -> bool:
    """Whether two folders hold the same files with the same bytes."""
    compared = filecmp.dircmp(left, right)
    if compared.left_only or compared.right_only or compared.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(left, right, compared.common_files, shallow=False)
    return (
        not mismatch
        and not errors
        and all(_same_tree(left / sub, right / sub) for sub in compared.common_dirs)
    )


def test_a_used_version_comes_back_with_dvc_checkout(make_project, generated_root):
    # given a run's data gate on data/ that DVC has never stored (generated, not `dvc add`ed)
    root = make_project()
    first_dvc_file = (root / "data.dvc").read_bytes()
    first = data.ensure_data(root)
    # then data.dvc is untouched
    assert (root / "data.dvc").read_bytes() == first_dvc_file
    # when a new data version is recorded
    (root / "data" / "smoke" / "notes.json").write_text('{"note": 1}\n')
    second = data_version.add_and_push(root)
    assert second != first.md5
    # and the user goes back to the first data.dvc and runs `dvc checkout`
    (root / "data.dvc").write_bytes(first_dvc_file)
    repo = Repo(str(root))
    try:
        repo.checkout(targets=[str(root / "data.dvc")], force=True)
    finally:
        repo.close()
    # then data/ is the first version's files, byte for byte
    assert data_version.verify(root) == first.md5
    assert _same_tree(root / "data", generated_root / "data")


def test_a_used_version_comes_back_with_dvc_pull(make_project, generated_root):
    # given a run's data gate has passed, then DVC's cache and data/ are lost
    root = make_project()
    data.ensure_data(root)
    shutil.rmtree(root / ".dvc" / "cache", ignore_errors=True)
    shutil.rmtree(root / "data")
    # when the user pulls from the project's remote
    assert data_version.pull(root)
    # then data/ is that version's files
    assert _same_tree(root / "data", generated_root / "data")


def test_storing_is_done_once(make_project):
    # given a run's data gate has stored data/ in DVC's cache and remote
    root = make_project()
    data.ensure_data(root)
    # when the next run's gate checks again
    # then nothing is stored or pushed again, and data.dvc keeps its bytes
    dvc_file = (root / "data.dvc").read_bytes()
    assert data_version.store(root) == ""
    assert (root / "data.dvc").read_bytes() == dvc_file


def test_an_unreachable_remote_costs_the_push_not_the_run(make_project):
    # given a project whose DVC remote cannot be written (a file where its folder should be)
    root = make_project()
    (root / ".dvcstore").write_text("not a folder\n")
    # when the data gate runs
    version = data.ensure_data(root)
    # then it passes
    assert version.matches_dvc is True
    # and data/ is in DVC's cache all the same: `dvc checkout` brings it back
    shutil.rmtree(root / "data")
    with Repo(str(root)) as repo:
        repo.checkout(targets=[str(root / "data.dvc")], force=True)
    assert data_version.verify(root) == version.md5
