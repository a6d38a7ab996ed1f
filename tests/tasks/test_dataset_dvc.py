"""`instructflow data add DIR`: a valid dataset gets a .dvc file; a bad one is refused unversioned."""

import json
import shutil

import dvc.repo  # noqa: F401  (DVC binds its log handlers to sys.stdout at first import:
import pytest  # imported inside a test, they would write to that test's closed capture)
import yaml

from instructflow.flows.cli import main
from instructflow.tasks.tables import TableError
from tests.conftest import init_dvc_project
from tests.own_data import write_pairwise_dataset


def test_data_add_versions_a_valid_dataset_and_refuses_a_bad_one(tmp_path, monkeypatch, capfd):
    root = init_dvc_project(tmp_path / "project")
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(root))
    good = write_pairwise_dataset(root / "mine", n=30)

    assert main(["data", "add", str(good)]) == 0

    outs = yaml.safe_load((root / "mine.dvc").read_text())["outs"]
    assert outs[0]["path"] == "mine" and outs[0]["md5"].endswith(".dir")
    printed = capfd.readouterr().out
    assert "preferences: md5" in printed and "commit" in printed

    bad = write_pairwise_dataset(root / "bad", n=10)
    rows = [json.loads(line) for line in (bad / "preferences.jsonl").read_text().splitlines()]
    rows[3]["rejected"] = ""
    (bad / "preferences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["data", "add", str(bad)]) == 2
    assert "preferences.jsonl row 4 field 'rejected'" in capfd.readouterr().err
    assert not (root / "bad.dvc").exists()

    with pytest.raises(TableError):  # the same refusal from the function itself
        from instructflow.tasks.dataset_dvc import add_dataset

        add_dataset(root, bad)
    assert main(["data", "add", str(tmp_path)]) == 2  # outside the project
    # which the refusal says how to fix: copy it in, or run on it without a version
    err = capfd.readouterr().err
    assert f"copy it into {root}" in err and "instructflow run --data" in err
    # and a folder that is not there is named as such first, wherever it would be
    assert main(["data", "add", str(tmp_path / "nothere")]) == 2
    assert "nothere field 'data': no such directory" in capfd.readouterr().err


def test_a_dataset_that_changed_since_data_add_is_refused_unless_allowed(tmp_path):
    from instructflow.tasks.data_version import DataMismatchError
    from instructflow.tasks.dataset_dvc import add_dataset, version_tags

    root = init_dvc_project(tmp_path / "project")
    mine = write_pairwise_dataset(root / "mine", n=20)
    assert version_tags(mine, allow_mismatch=False)["dvc_data_md5"].startswith("untracked")
    recorded = add_dataset(root, mine)
    tags = version_tags(mine, allow_mismatch=False)
    assert tags["data_mismatch"] == "false" and tags["dvc_data_md5"].endswith(".dir")
    assert recorded["dvc_file"].endswith("mine.dvc")

    with (mine / "preferences.jsonl").open("a") as f:
        f.write(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    with pytest.raises(DataMismatchError, match="instructflow data add"):
        version_tags(mine, allow_mismatch=False)
    assert version_tags(mine, allow_mismatch=True)["data_mismatch"] == "true"


def test_a_run_allowed_on_a_changed_dataset_records_the_version_it_read(tmp_path):
    from instructflow.tasks.dataset_dvc import add_dataset, dataset_version, version_tags

    # given a dataset added with `data add`, then edited
    root = init_dvc_project(tmp_path / "project")
    mine = write_pairwise_dataset(root / "mine", n=20)
    add_dataset(root, mine)
    recorded = dataset_version(mine)["dvc_md5"]
    with (mine / "preferences.jsonl").open("a") as f:
        f.write(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    now = dataset_version(mine)["md5"]
    assert now != recorded
    # when a run goes on with --allow-data-mismatch
    tags = version_tags(mine, allow_mismatch=True)
    # then its data version (report, MLflow dataset) is what it read, as on the embedded
    # world, not the .dvc file's, which it did not read; that one is kept beside it
    assert tags["dvc_data_md5"] == now
    assert tags["data_dvc_recorded_md5"] == recorded
    assert tags["data_mismatch"] == "true"


def test_data_add_outside_a_dvc_repository_says_so_in_one_line(tmp_path, monkeypatch, capfd):
    # given a folder that is not a DVC repository (the package installed with pip, run from
    # a folder of one's own), holding a valid dataset
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(tmp_path))
    mine = write_pairwise_dataset(tmp_path / "mine", n=30)
    # then `data add` refuses in one line saying how to make one (it ended in DVC's
    # NotDvcRepoError traceback), and nothing is written
    assert main(["data", "add", str(mine)]) == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert f"instructflow: {tmp_path} is not a DVC repository" in err and "dvc init" in err
    assert not (tmp_path / "mine.dvc").exists()


def test_data_verify_dir_names_each_file_that_differs_from_its_dvc_file(
    tmp_path, monkeypatch, capfd
):
    # given a dataset put under DVC with `data add`, and a note file added with it
    root = init_dvc_project(tmp_path / "project")
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(root))
    mine = write_pairwise_dataset(root / "mine", n=20)
    (mine / "notes.txt").write_text("where the rows came from\n")
    assert main(["data", "add", str(mine)]) == 0
    capfd.readouterr()
    # when it is verified unchanged, then it passes, naming the .dvc file
    assert main(["data", "verify", str(mine)]) == 0
    assert "matches mine.dvc" in capfd.readouterr().out
    # and once one table changed, the note is gone and a file appeared
    with (mine / "preferences.jsonl").open("a") as f:
        f.write(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    (mine / "notes.txt").unlink()
    (mine / "extra.jsonl").write_text("{}\n")
    # then it fails with one line per difference, naming each file, and how to go on
    assert main(["data", "verify", str(mine)]) == 2
    err = [line for line in capfd.readouterr().err.splitlines() if line.startswith("instructflow:")]
    assert "instructflow: changed: mine/preferences.jsonl" in err
    assert "instructflow: missing: mine/notes.txt" in err
    assert "instructflow: added: mine/extra.jsonl" in err
    assert len(err) == 4 and "does not match mine.dvc" in err[-1]  # nothing unchanged listed
    # and so it does when run from inside the folder
    monkeypatch.chdir(mine)
    assert main(["data", "verify", "."]) == 2
    assert "instructflow: changed: mine/preferences.jsonl" in capfd.readouterr().err


def test_data_verify_dir_refuses_a_folder_without_dvc_file_or_gone(tmp_path, monkeypatch, capfd):
    root = init_dvc_project(tmp_path / "project")
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(root))
    mine = write_pairwise_dataset(root / "mine", n=20)
    # never added: says how to add it
    assert main(["data", "verify", str(mine)]) == 2
    assert "has no mine.dvc" in capfd.readouterr().err
    # added, then removed: says it is missing and how to restore it
    assert main(["data", "add", str(mine)]) == 0
    shutil.rmtree(mine)
    assert main(["data", "verify", str(mine)]) == 2
    assert "is missing" in capfd.readouterr().err


def test_data_verify_outside_a_dvc_project_says_so_in_one_line(tmp_path, monkeypatch, capfd):
    from instructflow.tasks.dataset_dvc import OutsideProject, dataset_version, differences

    # given a dataset added in a DVC project, then copied with its .dvc file to a folder
    # that is in none (and a dataset there never added)
    root = init_dvc_project(tmp_path / "project")
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(root))
    assert main(["data", "add", str(write_pairwise_dataset(root / "mine", n=20))]) == 0
    outside = tmp_path / "elsewhere"
    shutil.copytree(root / "mine", outside / "mine")
    shutil.copy(root / "mine.dvc", outside / "mine.dvc")
    never_added = write_pairwise_dataset(outside / "fresh", n=10)
    gone = outside / "gone"
    shutil.copy(root / "mine.dvc", outside / "gone.dvc")
    capfd.readouterr()
    # when each is verified, then each is refused (exit 2) in one line naming the folder and
    # how to make a DVC project (the copy ended in DVC's NotDvcRepoError traceback; the
    # never-added one was told to `data add`, which refuses outside a DVC project)
    for folder in (outside / "mine", never_added, gone):
        assert main(["data", "verify", str(folder)]) == 2
        err = capfd.readouterr().err
        assert "Traceback" not in err and len(err.splitlines()) == 1
        assert err.startswith(f"instructflow: {folder} is not in a DVC project")
        assert "dvc init" in err and f"instructflow data add {folder}" in err
    # and the functions a run calls refuse in the same words
    for look in (dataset_version, differences):
        with pytest.raises(OutsideProject, match="is not in a DVC project"):
            look(outside / "mine")
