"""Every data version a run has used comes back with `dvc checkout` and `dvc pull`."""

import filecmp
import shutil
from dataclasses import asdict
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


def test_a_restore_before_the_flow_reaches_the_flows_gate_naming_where_from(make_project):
    # given data/ a run stored in DVC, then data/ deleted (DVC's cache kept)
    root = make_project()
    data.ensure_data(root)
    shutil.rmtree(root / "data")
    # when the CLI's preflight restores data/, then the flow's gate looks (in one process)
    before_flow = data.ensure_data(root)
    in_flow = data.ensure_data(root)
    # then the flow's gate says data/ was pulled, not that it was there
    assert [before_flow.restored_by, in_flow.restored_by] == ["dvc pull", "dvc pull"]
    assert in_flow.restored_from == f"DVC cache {root / '.dvc' / 'cache'}"
    # and a later run's gate finds it present
    assert data.ensure_data(root).restored_by == "present"


def test_a_pull_from_the_remote_is_said_in_the_log_line_and_the_parent_runs_tags(make_project):
    # given data/ a run stored in DVC, then data/ and DVC's cache lost
    root = make_project()
    data.ensure_data(root)
    shutil.rmtree(root / ".dvc" / "cache")
    shutil.rmtree(root / "data")
    # when the data gate restores it
    version = asdict(data.ensure_data(root))
    # then the run's log line and its MLflow tags name the remote it came from
    remote = f"DVC remote 'local' ({root / '.dvcstore'})"
    assert version["restored_from"] == remote
    assert data.describe(version) == (
        f"data/ is DVC version {version['md5']} (missing: restored by dvc pull from {remote})"
    )
    assert data.version_tags(version) == {
        "dvc_data_md5": version["md5"],
        "data_mismatch": "false",
        "data_restored_by": "dvc pull",
        "data_restored_from": remote,
    }
    # and data/ that was there is said to be
    present = version | {"restored_by": "present", "restored_from": ""}
    assert data.describe(present) == f"data/ is DVC version {version['md5']} (present)"
    assert "data_restored_by" not in data.version_tags(present)


def test_a_restore_inside_a_flow_is_told_by_that_flow_only(make_project, prefect_harness):
    from prefect import flow

    # given data/ a run stored in DVC, then data/ deleted
    root = make_project()
    data.ensure_data(root)
    shutil.rmtree(root / "data")

    @flow
    def gate() -> str:
        return data.ensure_data(root).restored_by

    # when a flow's gate restores it (a deployment's run: no CLI preflight before it)
    # then that flow says so, and the next flow in this process finds data/ present
    assert [gate(), gate()] == ["dvc pull", "present"]
