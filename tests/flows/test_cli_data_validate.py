"""`instructflow data validate` and `run --data` on a new user's paths and tables: what each says."""

import pytest

from instructflow.flows.cli import main
from instructflow.flows.params import PipelineParams
from instructflow.tasks.tables import TableError


def test_validating_a_path_that_does_not_exist_says_so(tmp_path, capsys):
    # when a path that is not there is validated (with or without --kind)
    missing = tmp_path / "nonexist"
    assert main(["data", "validate", str(missing)]) == 2
    assert main(["data", "validate", str(missing), "--kind", "prompts"]) == 2
    # then each time it says the path does not exist (not that a file needs --kind)
    err = capsys.readouterr().err
    assert err.count(f"instructflow: no such directory or file: {missing}") == 2
    assert "--kind" not in err


def test_a_run_on_a_dataset_directory_that_does_not_exist_says_so(tmp_path):
    from instructflow.flows.own_data import preflight

    # given --data naming a folder that is not there (and one tracked by DVC but not pulled)
    params = PipelineParams(data=str(tmp_path / "nodata"), base_model=str(tmp_path / "model"))
    (tmp_path / "pulled.dvc").write_text("outs:\n- md5: 0123.dir\n  path: pulled\n")
    not_pulled = params.model_copy(update={"data": str(tmp_path / "pulled")})
    # then the refusal is that the directory does not exist, before the model or DVC is read
    with pytest.raises(TableError) as e:
        preflight(params)
    assert [(p.file, p.field, p.message) for p in e.value.problems] == [
        (str(tmp_path / "nodata"), "data", "no such directory")
    ]
    with pytest.raises(TableError, match=r"tracked by pulled.dvc: `dvc pull .*pulled`"):
        preflight(not_pulled)


def test_run_help_says_allow_data_mismatch_covers_added_datasets_too(capsys):
    # when `run --help` is shown
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    # then --allow-data-mismatch names both what it lets through: data/ and a dataset's DIR.dvc
    help_text = " ".join(capsys.readouterr().out.split())
    assert "data/ differs from data.dvc" in help_text
    assert (
        "--data directory added with `instructflow data add DIR` differs from its DIR.dvc"
        in help_text
    )
