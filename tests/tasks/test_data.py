"""The data stage: regeneration reproduces data.dvc, mismatches are refused, tables validate."""

import json
import shutil
from pathlib import Path

import pytest

from instructflow.tasks import data, data_version
from instructflow.tasks.tables import TableError
from instructflow.world import layout

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_regenerating_with_the_default_seed_reproduces_data_dvc(generated_root):
    # given data/ generated from scratch in a fresh DVC project (session fixture)
    # when DVC hashes it
    md5 = data_version.current_md5(generated_root)
    # then it is the version the repository's data.dvc records
    assert md5 == data_version.tracked_md5(REPO_ROOT)
    assert md5.endswith(".dir")
    # and every profile is there
    assert sorted(p.name for p in (generated_root / "data").iterdir()) == ["small", "smoke", "tiny"]


def test_ensure_data_accepts_matching_data(make_project):
    # given a project whose data/ matches data.dvc
    root = make_project()
    # when the data gate runs
    version = data.ensure_data(root)
    # then it passes and leaves data/ alone
    assert version == data.DataVersion(data_version.tracked_md5(REPO_ROOT), True, "present")


def test_one_changed_byte_is_refused_naming_data_dvc(make_project, change_one_byte):
    # given a project where one byte of one table changed
    root = make_project()
    change_one_byte(root / "data" / "smoke" / layout.RM_TRAIN)
    # when the data gate runs
    # then it refuses, naming data.dvc, with advice that works in a clone whose DVC cache is
    # empty (test_missing_data_is_restored_and_verified), not `dvc checkout`, which fails there
    with pytest.raises(data_version.DataMismatchError, match=r"data\.dvc") as refused:
        data.ensure_data(root)
    assert "remove data/ and run again" in str(refused.value)
    assert "dvc checkout" not in str(refused.value)
    # and, when mismatches are allowed, it reports the data's own md5 as not matching
    version = data.ensure_data(root, allow_mismatch=True)
    assert version.matches_dvc is False
    assert version.md5 != data_version.tracked_md5(root)
    assert version.md5 == data_version.current_md5(root)
    assert version.restored_by == "present"


def test_an_added_file_is_refused(make_project):
    # given a project with an extra file under data/
    root = make_project()
    (root / "data" / "smoke" / "notes.txt").write_text("hello\n")
    # then the gate refuses it too
    with pytest.raises(data_version.DataMismatchError, match=r"data\.dvc"):
        data.ensure_data(root)


def test_missing_data_is_restored_and_verified(make_project):
    # given a fresh clone: data.dvc but no data/ (and no reachable DVC remote)
    root = make_project(with_data=False)
    assert not (root / "data").exists()
    # when the data gate runs
    version = data.ensure_data(root)
    # then data/ is back, verified against data.dvc
    assert version.restored_by in ("regenerated", "dvc pull")
    assert version.restored_from  # a DVC cache or remote, or the seed
    assert version.matches_dvc is True
    assert version.md5 == data_version.tracked_md5(REPO_ROOT)
    assert data_version.verify(root) == version.md5
    # and no staging folder is left behind
    assert [p.name for p in root.iterdir() if p.name.startswith(".data-")] == []


def test_missing_data_dvc_is_an_error_naming_it(tmp_path):
    # given a root without data.dvc
    # then the md5 it should have cannot be read, and the error says how to make one
    with pytest.raises(data_version.DataMismatchError, match=r"data\.dvc is missing"):
        data_version.tracked_md5(tmp_path)


def test_labeler_agreement_is_like_the_papers(generated_root):
    # given the tiny world's overlap comparisons (two training labelers per item)
    agreement = data.labeler_agreement(generated_root / "data" / "tiny")
    # then they agree about as often as InstructGPT's labelers (~73%)
    assert 0.65 <= agreement <= 0.80


@pytest.mark.parametrize("profile", ["smoke", "tiny"])
def test_generated_tables_validate(generated_root, profile):
    # given a generated profile
    folder = generated_root / "data" / profile
    # when every table is validated
    frames = data.validate_profile(folder)
    # then all pass, with the rows the manifest promises
    assert set(frames) == set(data.TABLE_KINDS)
    sizes = json.loads((folder / layout.MANIFEST).read_text())["sizes"]
    assert len(frames[layout.EVAL_TEST]) == sizes["test_prompts"]
    assert len(frames[layout.RM_TRAIN]) + len(frames[layout.RM_VALID]) == sizes["rm_prompts"]


def _copy_profile(generated_root: Path, tmp_path: Path, profile: str = "smoke") -> Path:
    folder = tmp_path / profile
    shutil.copytree(generated_root / "data" / profile, folder)
    return folder


def _rewrite_row(path: Path, row: int, **changes) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    obj = json.loads(lines[row - 1])
    obj.update(changes)
    lines[row - 1] = json.dumps(obj)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_blank_prompt_is_named_by_file_row_and_field(generated_root, tmp_path):
    # given a copy of the smoke tables with row 5 of rm/train.jsonl's prompt blanked
    folder = _copy_profile(generated_root, tmp_path)
    bad_file = folder / layout.RM_TRAIN
    _rewrite_row(bad_file, 5, prompt="   ")
    # when the profile is validated
    with pytest.raises(TableError) as caught:
        data.validate_profile(folder)
    # then the error names the file, the row and the field, and nothing else
    problems = [(p.file, p.row, p.field) for p in caught.value.problems]
    assert problems == [(str(bad_file), 5, "prompt")]
    assert f"{bad_file} row 5 field 'prompt'" in str(caught.value)


def test_user_in_two_splits_is_refused(generated_root, tmp_path):
    # given a copy where a test user's id is put on a training prompt
    folder = _copy_profile(generated_root, tmp_path)
    test_user = json.loads((folder / layout.EVAL_TEST).read_text().splitlines()[0])["user_id"]
    bad_file = folder / layout.PPO_TRAIN
    _rewrite_row(bad_file, 3, user_id=test_user)
    # when the profile is validated
    with pytest.raises(TableError) as caught:
        data.validate_profile(folder)
    # then the leak is named: the rows of the user's real split, field user_id,
    # each pointing at the training row where the user was first seen
    problems = caught.value.problems
    assert problems
    assert {(Path(p.file).relative_to(folder).as_posix(), p.field) for p in problems} == {
        (layout.EVAL_TEST, "user_id")
    }
    assert all(test_user in p.message for p in problems)
    assert all(f"{bad_file} row 3" in p.message for p in problems)


def test_problems_in_several_tables_are_all_reported(generated_root, tmp_path):
    # given two broken tables at once (lazy validation)
    folder = _copy_profile(generated_root, tmp_path)
    _rewrite_row(folder / layout.SFT_TRAIN, 2, response="")
    _rewrite_row(folder / layout.PUBLIC_SUITE, 4, answer=9)
    # when the profile is validated
    with pytest.raises(TableError) as caught:
        data.validate_profile(folder)
    # then both are named
    found = {(Path(p.file).relative_to(folder).as_posix(), p.row) for p in caught.value.problems}
    assert (layout.SFT_TRAIN, 2) in found
    assert (layout.PUBLIC_SUITE, 4) in found


def test_a_pull_with_nothing_to_restore_fails_quietly(tmp_path, capfd, caplog):
    # given a fresh clone of this repository: no data/, no DVC cache, no .dvcstore remote
    import subprocess

    if not (REPO_ROOT / ".git").exists():
        pytest.skip("needs the git checkout to clone")
    root = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(root)], check=True)
    capfd.readouterr()
    # when the data gate tries to restore data/ with DVC
    with caplog.at_level("DEBUG"):
        restored = data_version.pull(root)
    # then it says it could not (the caller regenerates data/), and DVC's warnings
    # about the missing cache files are not shown
    assert restored is False
    assert not (root / "data").exists()
    assert [r.getMessage() for r in caplog.records if r.levelno >= 30] == []
    out, err = capfd.readouterr()
    assert "WARNING" not in out + err


def test_the_data_stage_run_holds_its_counts_settings_and_tables(
    generated_root, tmp_path, monkeypatch
):
    import mlflow
    from mlflow import MlflowClient

    from instructflow.tasks import tracking
    from tests.conftest import use_project

    use_project(monkeypatch, tmp_path)
    tracking.setup()
    profile_dir = generated_root / "data" / "smoke"
    with mlflow.start_run() as parent:
        result = data.validate_data_task.fn(
            str(profile_dir), "abc123.dir", str(tmp_path / "out"), parent.info.run_id
        )
    run = MlflowClient().get_run(result["mlflow_run_id"])
    sft_rows = len((profile_dir / layout.SFT_TRAIN).read_text().splitlines())
    assert run.data.metrics["data/rows/sft/train"] == sft_rows
    assert run.data.metrics["data/labeler_agreement"] == result["labeler_agreement"]
    assert run.data.params == {"profile_dir": str(profile_dir), "dvc_data_md5": "abc123.dir"}
    assert len(run.inputs.dataset_inputs) == 4
    assert (tmp_path / "out" / "DONE.json").exists()


def test_a_project_root_that_is_not_a_dvc_project_is_named(tmp_path):
    # given INSTRUCTFLOW_ROOT pointed at a folder with data.dvc but no .dvc/ (not a clone)
    shutil.copy2(REPO_ROOT / "data.dvc", tmp_path / "data.dvc")
    # then the data gate says so in one line, naming the folder, instead of DVC's traceback
    with pytest.raises(data_version.DataMismatchError, match="is not a DVC project") as refused:
        data.ensure_data(tmp_path)
    assert str(tmp_path) in str(refused.value) and "dvc init --no-scm" in str(refused.value)
