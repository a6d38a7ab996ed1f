"""The `instructflow` command line: help everywhere, exit 2 with a clear message on bad data (a refusal, as argparse exits 2 on bad usage)."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from instructflow.flows.cli import build_parser, main
from instructflow.tasks import data_version
from instructflow.world import layout

REPO_ROOT = Path(__file__).resolve().parents[2]
SUBCOMMANDS = [
    [],
    ["run"],
    ["params"],
    ["data"],
    ["data", "generate"],
    ["data", "verify"],
    ["data", "validate"],
    ["data", "add"],
    ["data", "from-hub"],
    ["promote"],
    ["evaluate"],
    ["best-of-n"],
    ["eval"],
    ["eval", "export"],
    ["eval", "import"],
    ["sweep"],
    ["compare"],
    ["plan"],
]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_subcommand_is_covered():
    # given the parser
    parser = build_parser()
    # then the commands whose help is tested below are all it has
    top = _subcommands(parser)
    assert set(top) == {
        "run",
        "params",
        "data",
        "promote",
        "evaluate",
        "best-of-n",
        "eval",
        "sweep",
        "compare",
        "plan",
    }
    assert set(_subcommands(top["data"])) == {
        "generate",
        "verify",
        "validate",
        "add",
        "from-hub",
    }
    assert set(_subcommands(top["eval"])) == {"export", "import"}
    assert not _subcommands(top["run"])
    tested = {tuple(c) for c in SUBCOMMANDS}
    assert tested == {
        (),
        ("run",),
        ("params",),
        ("data",),
        ("promote",),
        ("evaluate",),
        ("best-of-n",),
        ("eval",),
        ("sweep",),
        ("compare",),
        ("plan",),
    } | {("data", c) for c in _subcommands(top["data"])} | {
        ("eval", c) for c in _subcommands(top["eval"])
    }


@pytest.mark.parametrize("command", SUBCOMMANDS, ids=lambda c: " ".join(c) or "top")
def test_help_exits_zero(command, capsys):
    # when a command is asked for --help
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    # then it prints its usage and exits 0
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: instructflow" + "".join(f" {c}" for c in command))


def _report(root: Path, run: str, profile: str, keys: dict, dataset: dict | None = None) -> None:
    """A finished run's report and model folders; runs a, b, c... written in that order."""
    folder = root / "reports" / run
    folder.mkdir(parents=True)
    report = {"run": {"profile": profile, "stage_keys": keys}, "dataset": dataset}
    (folder / "report.json").write_text(json.dumps(report))
    written = 1_700_000_000 + ord(run)
    os.utime(folder / "report.json", (written, written))
    for stage, key in keys.items():
        (root / "runs" / stage / key / "model").mkdir(parents=True)


def test_best_of_n_takes_the_newest_embedded_world_run_of_its_profile(
    tmp_path, monkeypatch, capsys
):
    from instructflow.flows.cli_models import _world_models

    # given no runs yet: a refusal like every other one, exit 2 and one line with the fix
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(tmp_path))
    assert main(["best-of-n", "--profile", "smoke"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert err.startswith("instructflow: no finished run on the embedded world's smoke profile")
    assert "`instructflow run --profile smoke` first, or pass --sft and --rm" in err
    # given a smoke run on the world, then a run on a dataset and one on tiny (newer)
    _report(tmp_path, "a", "smoke", {"sft": "sft-1", "reward_model": "reward_model-1"})
    own = {"sft": "sft-2", "reward_model": "reward_model-2"}
    _report(tmp_path, "b", "smoke", own, dataset={"dir": "/data/mine"})
    _report(tmp_path, "c", "tiny", {"sft": "sft-3", "reward_model": "reward_model-3"})
    # then best-of-n on smoke takes the world's smoke models (a dataset has no gold to score by)
    sft, rm = _world_models("smoke")
    assert (sft.parent.name, rm.parent.name) == ("sft-1", "reward_model-1")
    # and models given by hand without the world's data/ get one line, not a traceback
    # (a tester's own-data SFT and RM ended in FileNotFoundError on data/tiny/eval/test.jsonl)
    capsys.readouterr()
    assert main(["best-of-n", "--sft", str(sft), "--rm", str(rm)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "tiny/eval/test.jsonl is not there" in err


def test_eval_import_prints_win_rates_and_likert_rounded(monkeypatch, capsys, tmp_path):
    # given an import whose CI bounds and Likert mean are thirds
    from instructflow.flows import human_eval

    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(tmp_path))

    third = {"mean": 2 / 3, "ci95": [1 / 3, 1.0]}
    policies = {
        "ppo": {"win_rate_vs_sft": third, "likert": {"mean": 11 / 3}},
        "sft": {"likert": {"mean": 4.0}},
        "flan": {"win_rate_vs_sft": third, "likert": {"mean": None}},  # ranked, not scored
    }
    result = {"run": {"mlflow_run_id": "run-1"}, "human_eval": {"policies": policies}}
    monkeypatch.setattr(human_eval, "import_labels", lambda run, file: result)
    # then they print as the report writes them, not as 0.3333333333333333
    assert main(["eval", "import", "latest", "ranked.csv"]) == 0
    out = capsys.readouterr().out
    assert "ppo: win vs sft 0.667 [0.333, 1.000], Likert 3.67" in out
    assert "sft: baseline, Likert 4.00" in out
    assert "flan: win vs sft 0.667 [0.333, 1.000], Likert none given" in out
    # and it says where the rewritten report is, as export says where its files are
    report_md = tmp_path / "reports" / "run-1" / "report.md"
    assert f"report: {report_md} (and the MLflow run's report/)\n" in out


def test_installed_script_prints_help():
    # given the console script the package installs
    script = Path(sys.executable).parent / "instructflow"
    if not script.exists():
        pytest.skip("instructflow is not installed in this environment")
    # when it is run with --help, as a user would
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    # then it lists the commands and exits 0
    assert done.returncode == 0, done.stderr
    assert "run" in done.stdout and "data" in done.stdout


def test_output_piped_into_a_reader_that_stopped_ends_quietly(tmp_path):
    # given stdout a pipe whose reader has already gone (`instructflow params --example | head -1`
    # once head has its line): the read end is closed before the command writes
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "instructflow", "params", "--example"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
    finally:
        os.close(write_end)
    # then it ends as a command the reader stopped reading ends (SIGPIPE's status), without
    # a traceback or a "lost a service" line: no service was involved
    assert done.returncode == 141, done.stderr
    assert done.stderr == ""


def test_a_broken_pipe_that_is_not_stdouts_is_still_a_lost_service(monkeypatch, capsys):
    from instructflow.flows import cli_run

    # given a command whose connection breaks while its own output is fine
    def compare(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli_run, "_cmd_compare", compare)
    # then it is the lost service's line and status, as before
    assert main(["compare", "a.json", "b.json"]) == 3
    assert "lost a service" in capsys.readouterr().err


def test_missing_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, usage",
    [
        (["sweep", "--seeds", "0", "--data", "mine"], "usage: instructflow sweep"),
        (["data", "validate", "mine", "--profile", "smoke"], "usage: instructflow data validate"),
    ],
)
def test_an_option_the_subcommand_does_not_take_shows_that_subcommands_usage(argv, usage, capsys):
    # given an option another subcommand takes (run's --data, --profile)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    # then the usage shown is the subcommand's, which lists what it does take, not the
    # top level's list of commands
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert usage in err and "unrecognized arguments: " in err
    assert "{run,params" not in err


def _write_prompts(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _prompt(i: int, **over) -> dict:
    row = {"prompt_id": f"p{i}", "user_id": f"u{i}", "split": "train", "family": "add"}
    return {**row, "prompt": f"What is {i} plus {i}?", **over}


def test_validate_good_file_exits_zero(tmp_path, capsys):
    # given a valid prompts table
    good = tmp_path / "prompts.jsonl"
    _write_prompts(good, [_prompt(0), _prompt(1)])
    # when it is validated
    code = main(["data", "validate", str(good), "--kind", "prompts"])
    # then it passes
    assert code == 0
    assert "2 valid rows" in capsys.readouterr().out


def test_validate_bad_file_exits_two_naming_file_row_and_field(tmp_path, capsys):
    # given a prompts table whose second row has an empty prompt
    bad = tmp_path / "prompts.jsonl"
    _write_prompts(bad, [_prompt(0), _prompt(1, prompt=""), _prompt(2)])
    # when it is validated
    code = main(["data", "validate", str(bad), "--kind", "prompts"])
    # then the command fails and says where
    assert code == 2
    err = capsys.readouterr().err
    assert f"{bad} row 2 field 'prompt'" in err
    assert "row 1 " not in err and "row 3 " not in err


def test_validate_a_dataset_directory_as_a_run_reads_it(tmp_path, capsys):
    from tests.own_data import write_pairwise_dataset

    # given a user's dataset directory (explicit prompt/chosen/rejected pairs)
    folder = write_pairwise_dataset(tmp_path / "mine", n=60)
    # when it is validated, no --kind needed
    assert main(["data", "validate", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "preferences: preferences.jsonl, 60 rows" in out and "pairwise" in out
    assert f"{folder}: valid" in out
    # and once a row's chosen answer is emptied, it names that row and field
    rows = [json.loads(line) for line in (folder / "preferences.jsonl").read_text().splitlines()]
    rows[2]["chosen"] = " "
    (folder / "preferences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["data", "validate", str(folder)]) == 2
    assert f"{folder / 'preferences.jsonl'} row 3 field 'chosen'" in capsys.readouterr().err
    # and a table file still needs its kind
    assert main(["data", "validate", str(folder / "preferences.jsonl")]) == 2


def test_verify_matching_data_exits_zero(make_project, monkeypatch, capsys):
    # given a project whose data/ matches data.dvc
    root = make_project()
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(root))
    # when it is verified
    code = main(["data", "verify"])
    # then it passes, printing the md5
    assert code == 0
    assert data_version.tracked_md5(REPO_ROOT) in capsys.readouterr().out


def test_verify_mismatched_data_exits_two_naming_data_dvc(
    make_project, change_one_byte, monkeypatch, capsys
):
    # given a project where one byte of one table changed
    root = make_project()
    change_one_byte(root / "data" / "tiny" / layout.PPO_VALID)
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(root))
    # when it is verified
    code = main(["data", "verify"])
    # then it fails, naming data.dvc and both md5s
    assert code == 2
    err = capsys.readouterr().err
    assert "data.dvc" in err
    assert data_version.tracked_md5(REPO_ROOT) in err
    assert data_version.current_md5(root) in err
    # and, DVC's cache never having held data.dvc's version (its file list), that it cannot
    # tell which files differ, and how to fetch that list
    assert "which files differ is unknown" in err and "dvc fetch data.dvc" in err


def test_verify_names_the_file_of_data_that_differs(
    make_project, change_one_byte, monkeypatch, capsys
):
    # given a project whose data/ was stored in DVC's cache (as a run that matched does),
    # then one byte of one table changed
    root = make_project()
    data_version.store(root)
    changed = root / "data" / "tiny" / layout.PPO_VALID
    change_one_byte(changed)
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(root))
    # when it is verified
    code = main(["data", "verify"])
    # then it fails with one line naming that file, and only that one, before the md5s
    assert code == 2
    # (its lines: the DVC init above may leave a logging error of another test's capture)
    err = [
        line for line in capsys.readouterr().err.splitlines() if line.startswith("instructflow:")
    ]
    assert err[0] == f"instructflow: changed: {changed.relative_to(root).as_posix()}"
    assert "data/ does not match data.dvc" in err[1] and len(err) == 2


def test_verify_without_data_exits_two(make_project, monkeypatch, capsys):
    # given a project with data.dvc but no data/
    root = make_project(with_data=False)
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(root))
    # when it is verified
    code = main(["data", "verify"])
    # then it fails, says data/ is missing and how to get it back (a fresh clone has none)
    assert code == 2
    err = capsys.readouterr().err
    assert "data/ is missing" in err
    assert "dvc pull" in err and "instructflow data generate" in err and "instructflow run" in err
    assert not (root / "data").exists()


def test_compare_says_when_two_reports_come_from_different_machines(tmp_path, capsys):
    # given two reports of the same policy made on different CPUs
    from instructflow.tasks.provenance import collect

    prov = collect(seed=0)
    row = {
        "gold_score": {"mean": 0.5},
        "win_rate_vs_sft": {"mean": 0.6},
        "public_suite_accuracy": 0.4,
    }
    a = {"provenance": prov, "policies": {"ppo": row}}
    b = {
        "provenance": prov | {"cpu_flags": ["avx2"]},
        "policies": {"ppo": row | {"public_suite_accuracy": 0.45}},
    }
    files = []
    for name, report in (("a.json", a), ("b.json", b)):
        (tmp_path / name).write_text(json.dumps(report))
        files.append(str(tmp_path / name))
    # when they are compared
    assert main(["compare", *files]) == 0
    out = capsys.readouterr().out
    # then the output says so, names the difference, and sets the figures side by side
    assert "ACROSS MACHINES" in out and "cpu_flags" in out
    assert "| ppo | public_suite_accuracy | 0.400 | 0.450 | +0.050 |" in out


def test_sweep_reads_the_params_file_that_params_example_writes(tmp_path, monkeypatch, capsys):
    # given the file `instructflow params --example` writes (the form's shape, `_` comments)
    assert main(["params", "--example"]) == 0
    params_file = tmp_path / "p.json"
    params_file.write_text(capsys.readouterr().out)
    from instructflow.flows import sweep

    seen = {}

    def fake_sweep(params, seeds, workers):
        seen.update(params=params, seeds=seeds)
        return {"sweep": {"seeds": seeds}}

    monkeypatch.setattr(sweep, "run_sweep", fake_sweep)
    # when a sweep is started with it and a profile flag
    code = main(["sweep", "--seeds", "0", "1", "--profile", "smoke", "--params", str(params_file)])
    # then the file's fields reach the sweep, the flag overriding the file's profile
    assert code == 0
    assert seen["seeds"] == [0, 1]
    assert seen["params"].profile == "smoke"


def test_sweep_with_a_bad_params_file_is_refused_in_one_line(tmp_path, capsys):
    # given a params file with a misspelt field
    params_file = tmp_path / "p.json"
    params_file.write_text(json.dumps({"params": {"ppo": {"lr_rate": 1}}}))
    # when a sweep is started with it
    code = main(["sweep", "--seeds", "0", "--params", str(params_file)])
    # then it is refused like `run --params`: exit 2, the field named, no traceback
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown field 'ppo.lr_rate'" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "export", "latest", "--n", "0"],  # wrote an empty labeling file
        ["eval", "export", "latest", "--n", "-3"],  # silently left the last 3 prompts out
        ["evaluate", "champion", "challenger", "--max-prompts", "-1"],
        ["best-of-n", "--n", "0"],
        ["best-of-n", "--prompts", "-5"],
        # took ~8 s (the settings' imports), then said "an integer >= 1 or null"
        ["run", "--threads", "0"],
        ["run", "--processes", "0"],
        ["sweep", "--seeds", "0", "--threads", "-1"],
    ],
)
def test_a_count_below_one_is_a_usage_error_naming_the_flag(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert f"argument {argv[-2]}: must be a whole number >= 1, got '{argv[-1]}'" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    "argv, said",
    [
        (["plan", "--memory", "24XB"], "argument --memory: not a memory size: '24XB'"),  # traceback
        # read as 24 bytes: every stage said NO, and the output never said what it compared to
        (["plan", "--memory", "24"], "argument --memory: '24' has no unit (e.g. 24GiB"),
        # 0 bytes read as no --memory at all: the fits column was left out
        (["plan", "--memory", "0GiB"], "argument --memory: not a memory size: '0GiB' is 0 bytes"),
        (["plan", "--seq-len", "-5"], "argument --seq-len: must be a whole number >= 1"),
        (["plan", "--prompt-len", "0"], "argument --prompt-len: must be a whole number >= 1"),
    ],
)
def test_a_bad_plan_size_is_a_usage_error_naming_the_flag(argv, said, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert said in capsys.readouterr().err


def test_sweep_workers_below_one_is_a_usage_error(capsys):
    # it started Prefect's server and then ended in "ValueError: max_workers must be greater than 0"
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "--seeds", "0", "--workers", "-2"])
    assert exit_info.value.code == 2
    assert "argument --workers: must be a whole number >= 1, got '-2'" in capsys.readouterr().err


def test_compare_refuses_a_failed_runs_report_and_reads_a_run_folder(tmp_path, capsys):
    # given the report of a run that failed in its evaluation (no figures), and a good one
    failed = {
        "run": {"mlflow_run_id": "abc", "data_dir": "/data/mine"},
        "policies": {},
        "status": "failed",
        "stopped_at_stage": "evaluation",
        "error": "ValueError: example is 133 tokens, longer than max_len=128",
    }
    (tmp_path / "failed.json").write_text(json.dumps(failed))
    good = tmp_path / "run1"
    good.mkdir()
    (good / "report.json").write_text(json.dumps({"policies": {"ppo": {"kl_to_sft": 0.1}}}))
    # then comparing with the failed one is refused in one line saying why (it printed an
    # empty table, calling the dataset run's judge the embedded world's labelers)
    assert main(["compare", str(tmp_path / "failed.json"), str(good / "report.json")]) == 2
    assert (
        f"instructflow compare: {tmp_path / 'failed.json'}: the run failed at stage"
        " 'evaluation' (ValueError: example is 133 tokens, longer than max_len=128):"
        " its report has no figures to compare"
    ) in capsys.readouterr().err
    # and a run's report folder (reports/<run>, reports/latest) reads as its report.json
    assert main(["compare", str(good), str(good / "report.json")]) == 0


def test_version_prints_the_installed_distributions(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"instructflow {version('instructflow')}"
