"""`instructflow data validate` and `run --data` on a new user's paths and tables: what each says."""

import json

import pytest

from instructflow.flows.cli import main
from instructflow.flows.params import PipelineParams
from instructflow.tasks.tables import TableError
from tests.own_data import hh_text, write_extras, write_hh_dataset, write_pairwise_dataset


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
    from instructflow.flows.own_data_checks import preflight

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


def test_validate_counts_the_rows_it_leaves_out_by_reason(tmp_path, capsys):
    # given 150 HH pairs, 10 of whose rejected sides diverge before the last turn
    folder = write_hh_dataset(tmp_path / "hh", n_pairs=150)
    path = folder / "preferences.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows[:10]:
        row["rejected"] = hh_text([("user", "Something else."), ("assistant", "no")])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # when the directory is validated
    assert main(["data", "validate", str(folder)]) == 0
    # then the 10 left out are counted with their reason beside the 140 kept
    out = capsys.readouterr().out
    assert "K counts {2: 140}" in out
    assert "rows left out: no_shared_prefix=10 (preference pairs whose sides" in out
    # with the first five of them named (rows are numbered from 1, as in every refusal)
    assert "before the last turn; rows 1, 2, 3, 4, 5, ... of preferences.jsonl)" in out
    # and a dataset that leaves nothing out says so
    assert main(["data", "validate", str(write_hh_dataset(tmp_path / "all", n_pairs=150))]) == 0
    assert "rows left out: none" in capsys.readouterr().out


def test_a_parquet_file_or_a_file_without_kind_is_refused_in_one_line_pointing_to_its_directory(
    tmp_path, capsys
):
    # given a dataset directory in Parquet
    folder = write_pairwise_dataset(tmp_path / "convdata", n=60, fmt="parquet")
    # when one of its files is validated as a table, with or without --kind
    for argv in (["--kind", "pairwise"], ["--kind", "prompts"], []):
        assert main(["data", "validate", str(folder / "preferences.parquet"), *argv]) == 2
        # then one line says so and names the directory to validate instead (no JSONL errors)
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and "invalid UTF-8" not in lines[0], lines
        assert lines[0].endswith(f"validate its directory: instructflow data validate {folder}")


def test_kind_preferences_is_a_usage_error_naming_the_directory_form(tmp_path, capsys):
    # given a user's preferences.jsonl (argparse said only "invalid choice: 'preferences'")
    folder = write_pairwise_dataset(tmp_path / "mydata", n=60)
    # when it is validated with --kind preferences
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "validate", str(folder / "preferences.jsonl"), "--kind", "preferences"])
    # then a usage error says how a dataset's preferences are checked, and which kinds exist
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --kind: 'preferences' is a table of your own dataset" in err
    assert "instructflow data validate DIR (its directory)" in err
    assert "tables: prompts, demonstrations, comparisons, pairwise" in err


def test_a_dataset_table_failing_an_embedded_world_schema_points_to_its_directory(tmp_path, capsys):
    # given a user's preferences.jsonl that `run --data` reads (no prompt_id, user_id, ...)
    folder = write_pairwise_dataset(tmp_path / "mydata", n=150)
    # when it is validated as the embedded world's pairwise kind
    assert main(["data", "validate", str(folder / "preferences.jsonl"), "--kind", "pairwise"]) == 2
    # then the problems are listed as before, and the last line points to the directory
    lines = capsys.readouterr().err.splitlines()
    assert "missing required field" in "\n".join(lines)
    assert (
        lines[-1]
        == f"instructflow: for your own dataset, validate its directory: instructflow data validate {folder}"
    )
    # while a table of the embedded world's layout that fails gets no such hint
    bad = tmp_path / "train.jsonl"
    bad.write_text(json.dumps({"prompt": "x"}) + "\n")
    assert main(["data", "validate", str(bad), "--kind", "prompts"]) == 2
    assert "your own dataset" not in capsys.readouterr().err


def test_validate_with_the_base_model_renders_and_splits_as_the_run_does(tmp_path, capsys):
    # Without the model prompts are plain text; a run renders conversations with the
    # model's chat template and checks rows against its context: a user saw other counts
    # in `data validate` than in the run's report (splits were then drawn from the
    # rendered text; now from the prompt before rendering, tests/tasks/test_split_keys.py).
    from instructflow.flows.own_data_checks import max_new_tokens
    from instructflow.flows.params import PipelineParams
    from instructflow.tasks.dataset import load_dataset
    from instructflow.tasks.dataset_report import split_counts_text
    from instructflow.tasks.lengths import length_check
    from tests.own_data import write_hh_dataset
    from tests.tiny_models import tiny_llama

    folder = write_hh_dataset(tmp_path / "hh", n_pairs=60)
    llama = tiny_llama(tmp_path / "llama", [p.read_text() for p in folder.iterdir()])
    as_run = load_dataset(
        folder, lengths=length_check(str(llama), max_new_tokens(PipelineParams()))
    )
    assert main(["data", "validate", str(folder)]) == 0
    plain = capsys.readouterr().out
    assert "--base-model DIR checks as the run does" in plain
    assert main(["data", "validate", str(folder), "--base-model", str(llama)]) == 0
    out = capsys.readouterr().out
    splits = split_counts_text(as_run.summary["split_counts"])
    assert f"splits by {as_run.summary['split_rule']}: {splits}" in out
    assert f"prompts rendered: {as_run.summary['rendering']}" in out
    assert f"valid for {llama}" in out
    # and SFT's first example is shown as the model reads it: this model has no chat
    # template, so the pipeline's Q/A frame, and the model's own EOS
    from transformers import AutoTokenizer

    first = json.loads((folder / "demonstrations.jsonl").read_text().splitlines()[0])
    question, answer = (m["content"] for m in first["messages"])
    eos = AutoTokenizer.from_pretrained(llama).eos_token
    shown = repr(f"Q: {question}\nA: {answer}{eos}")
    assert f"SFT's first example as the model reads it, demonstrations.jsonl row 1: {shown}" in out


def test_validate_reads_the_runs_params_file_for_its_dataset_settings(tmp_path, capsys):
    # given pairs whose prompts are too long for a tiny model's context of 48 tokens
    from tests.tiny_models import tiny_llama

    folder = write_pairwise_dataset(tmp_path / "pw", n=60)
    rows = [json.loads(line) for line in (folder / "preferences.jsonl").read_text().splitlines()]
    rows[4]["prompt"] = "Say the word apple twice. " * 20 + "Now say it."
    (folder / "preferences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    llama = tiny_llama(tmp_path / "llama", [p.read_text() for p in folder.iterdir()])
    config = json.loads((llama / "config.json").read_text())
    (llama / "config.json").write_text(json.dumps(config | {"max_position_embeddings": 48}))
    # when validated with the default settings, the refusal says which setting runs anyway
    assert main(["data", "validate", str(folder), "--base-model", str(llama)]) == 2
    assert "set dataset.overlong to 'drop' or 'truncate'" in capsys.readouterr().err
    # then with that setting in the run's params file (the shape `run --params` takes),
    # the same command checks what the run will do
    params = tmp_path / "p.json"
    params.write_text(json.dumps({"params": {"dataset": {"overlong": "drop"}}}))
    args = ["data", "validate", str(folder), "--base-model", str(llama), "--params", str(params)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "too-long rows: preferences.jsonl 1 dropped (row 5) (dataset.overlong: drop)" in out
    assert "rows left out: 1 too long (preferences.jsonl: row 5)" in out  # it said "none"
    assert f"as a run with the settings of {params} reads it" in out
    # and a bad setting in the file is refused in one line, as `run` refuses it
    params.write_text(json.dumps({"dataset": {"overlong": "cut"}}))
    assert main(args) == 2
    assert 'dataset.overlong = "cut" is not allowed' in capsys.readouterr().err


def test_validate_says_what_sft_trains_on_and_which_stages_a_missing_table_skips(tmp_path, capsys):
    # given pairs without demonstrations, pretraining text or baselines' mixtures
    folder = write_pairwise_dataset(tmp_path / "pw")
    (folder / "demonstrations.jsonl").unlink(missing_ok=True)
    assert main(["data", "validate", str(folder)]) == 0
    # then validate says what the run's report says only after training
    out = capsys.readouterr().out.splitlines()
    assert "SFT trains on: preferred responses (no demonstrations table)" in out
    assert (
        "no table: pretrain (PPO-ptx is skipped), flan (the FLAN-style baseline is skipped),"
        " t0 (the T0-style baseline is skipped)"
    ) in out
    # and with pretraining text and a FLAN mixture beside them, only t0 is missing
    write_extras(folder)
    assert main(["data", "validate", str(folder)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "no table: t0 (the T0-style baseline is skipped)" in out
