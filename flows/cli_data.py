"""Subcommands about data: data generate, add, verify, validate."""

import argparse
import sys
from pathlib import Path

from instructflow.tasks.paths import project_root
from instructflow.tasks.schemas import KINDS


def _cmd_data_generate(args: argparse.Namespace) -> int:
    from instructflow.tasks import data, data_version

    root = project_root()
    data.generate(root, seed=args.seed)
    print(f"wrote {root / 'data'} (seed {args.seed})")
    if args.no_dvc:
        return 0
    md5 = data_version.add_and_push(root)
    print(f"data.dvc now records md5 {md5}; commit data.dvc to make it the project's data version")
    return 0


def _cmd_data_add(args: argparse.Namespace) -> int:
    from instructflow.tasks.dataset_dvc import OutsideProject, add_dataset

    try:
        added = add_dataset(project_root(), Path(args.dir))
    except OutsideProject as error:
        print(f"instructflow: {error}", file=sys.stderr)
        return 2
    for name, md5 in added["md5s"].items():
        print(f"{name}: md5 {md5}")
    where = "DVC cache and remote" if added["pushed"] else "DVC cache"
    print(f"stored in the {where}; commit {added['dvc_file']} to version the dataset")
    return 0


def _cmd_data_from_hub(args: argparse.Namespace) -> int:
    from instructflow.tasks.hub_import import HubImportError, gather

    try:
        mapping = dict(pair.split("=", 1) for pair in args.split)
    except ValueError:
        print(f"instructflow: --split {args.split}: each is NAME=SPLIT", file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        rows = gather(Path(args.snapshot), out, args.table, mapping)
    except HubImportError as error:
        print(f"instructflow: {error}", file=sys.stderr)
        return 2
    for split, count in rows.items():
        print(f"{split}: {count} rows" if count else f"{split}: left out")
    print(f"wrote {out / (args.table + '.parquet')}; next: instructflow data validate {out}")
    return 0


def _cmd_data_verify(args: argparse.Namespace) -> int:
    from instructflow.tasks import data_version
    from instructflow.tasks.dataset_dvc import differences

    root = project_root()
    folder = Path(args.dir) if args.dir else root / "data"
    if folder.resolve() != (root / "data").resolve():
        return _verify_dataset(folder)
    try:
        md5 = data_version.verify(root)
    except data_version.DataMismatchError:
        if folder.is_dir():  # which files differ, before the md5s and how to go on
            _print_differences(differences(folder))
        raise
    print(f"data/ matches data.dvc (md5 {md5})")
    return 0


def _verify_dataset(folder: Path) -> int:
    """`data verify DIR` for a dataset put under DVC with `data add DIR`: 0 if DIR matches
    DIR.dvc, else 2 with one line per file that differs."""
    from instructflow.tasks.dataset_dvc import dataset_version, differences, dvc_root

    dvc_root(folder)  # outside a DVC project, that is what to fix first (exit 2, one line)
    absolute = folder.resolve()  # `.` (run from inside DIR) has no name to add .dvc to
    dvc_file = absolute.with_name(absolute.name + ".dvc")
    if not dvc_file.exists():
        print(
            f"instructflow: {folder} has no {dvc_file.name}: `instructflow data add {folder}`"
            " puts it under DVC",
            file=sys.stderr,
        )
        return 2
    if not folder.is_dir():
        print(
            f"instructflow: {folder} is missing; {dvc_file.name} records it:"
            f" `dvc checkout {dvc_file}` (or `dvc pull {dvc_file}`) restores it",
            file=sys.stderr,
        )
        return 2
    version = dataset_version(folder)
    if version["matches"]:
        print(f"{folder} matches {dvc_file.name} (md5 {version['md5']})")
        return 0
    _print_differences(differences(folder))
    print(
        f"instructflow: {folder} does not match {dvc_file.name}: it records md5"
        f" {version['dvc_md5']}, the folder hashes to {version['md5']}; `instructflow data add"
        f" {folder}` records the new version, `dvc checkout {dvc_file}` restores the recorded"
        " one",
        file=sys.stderr,
    )
    return 2


def _print_differences(lines: list[str]) -> None:
    for line in lines:
        print(f"instructflow: {line}", file=sys.stderr)


def _cmd_data_validate(args: argparse.Namespace) -> int:
    from instructflow.tasks.input_checks import table_problems
    from instructflow.tasks.tables import TableError

    if not Path(args.file).exists():
        print(f"instructflow: no such directory or file: {args.file}", file=sys.stderr)
        return 2
    if Path(args.file).is_dir():  # a dataset directory, read as `run --data` reads it
        return _validate_dataset(Path(args.file), args.base_model, args.params)
    path = Path(args.file)
    if args.kind is None or path.suffix == ".parquet":  # --kind's schemas are JSONL's
        what = "is Parquet" if path.suffix == ".parquet" else "needs --kind"
        print(
            f"instructflow: {path} {what}: --kind checks a JSONL table in the embedded world's"
            f" format; {_own_data_hint(path)}",
            file=sys.stderr,
        )
        return 2
    frame, problems = table_problems(path, args.kind)  # an empty file is refused too
    if frame is None and _is_own_data_table(path):
        print(f"instructflow: {TableError(problems)}", file=sys.stderr)
        print(f"instructflow: {_own_data_hint(path)}", file=sys.stderr)
        return 2
    if frame is None:
        raise TableError(problems)
    print(f"{args.file}: {len(frame)} valid rows of kind {args.kind}")
    return 0


def _kind(text: str) -> str:
    """--kind's value. `preferences` (a table of a user's dataset, which has no --kind schema)
    is refused with the way to check it: argparse's "invalid choice" did not say."""
    if text == "preferences":
        raise argparse.ArgumentTypeError(
            "'preferences' is a table of your own dataset, checked with the rest of it: "
            "instructflow data validate DIR (its directory); --kind checks the embedded "
            f"world's tables: {', '.join(KINDS)}"
        )
    return text


def _is_own_data_table(path: Path) -> bool:
    """Named as a table of a dataset directory (the embedded world's are train.jsonl, ...)."""
    from instructflow.tasks.dataset_schemas import OPTIONAL_TABLES, TABLES

    return path.stem in (*TABLES, *OPTIONAL_TABLES)


def _own_data_hint(path: Path) -> str:
    # A user's tables (any shape `run --data` reads, JSONL or Parquet) are checked as
    # a directory: the --kind schemas want the embedded world's ids and splits.
    return f"for your own dataset, validate its directory: instructflow data validate {path.parent}"


def _validate_dataset(
    folder: Path, base_model: str | None = None, params_file: str | None = None
) -> int:
    """Every check of a user's dataset; with `base_model`, rendered and length-checked as a run
    with the settings of `params_file` (else the defaults) does (without, its chat template
    and context are not known: prompts are plain text, and no row is too long). Raises
    TableError listing every problem."""
    from instructflow.flows.params_io import build_params, read_params_file
    from instructflow.tasks.dataset import load_dataset
    from instructflow.tasks.dataset_names import notes
    from instructflow.tasks.dataset_report import (
        overlong_text,
        split_counts_text,
        training_example,
    )

    # The run's dataset settings (overlong, split fractions) and sampling room: a refusal
    # that says "set dataset.overlong in --params" must be checkable here with that file.
    params = build_params(read_params_file(params_file) if params_file else {})
    check = None
    if base_model:
        from instructflow.flows.own_data_checks import max_new_tokens
        from instructflow.tasks.input_checks import base_model_problems
        from instructflow.tasks.lengths import length_check
        from instructflow.tasks.tables import TableError

        if problems := base_model_problems(Path(base_model))[1]:
            raise TableError(problems)
        check = length_check(base_model, max_new_tokens(params))
    dataset = load_dataset(folder, params.dataset, lengths=check)
    if check is not None:  # PPO-ptx's blocks are tokens: the base model's tokenizer counts them
        from instructflow.tasks.split_sizes import ptx_mix_problems

        block = params.stage("ppo").ptx_block_size
        if problems := ptx_mix_problems(dataset, check.tokenizer, block):
            raise TableError(problems)
    summary = dataset.summary
    for name, table in summary["tables"].items():
        print(f"{name}: {table['file']}, {table['rows']} rows, md5 {table['md5']}")
    print(f"preferences: {summary['preference_shape']}, K counts {summary['k_counts']}")
    print(f"rows left out: {_left_out(summary)}")
    for line in _what_runs(summary):
        print(line)
    print(f"splits by {summary['split_rule']}: {split_counts_text(summary['split_counts'])}")
    for warning in summary["split_warnings"]:
        print(f"warning: {warning}")
    if summary.get("trl_forms"):
        print(f"rows in TRL's forms: {summary['trl_forms']}")
    for line in notes(summary):  # ignored columns, files not read, near-miss names
        print(line)
    if base_model:
        too_long = overlong_text(summary["overlong"], summary.get("overlong_rows"))
        print(f"prompts rendered: {summary['rendering']}; too-long rows: {too_long}")
        if example := training_example(dataset, check.tokenizer):  # the frame, seen
            print(f"SFT's first example as the model reads it, {example}")
        settings = f"the settings of {params_file}" if params_file else "default settings"
        print(f"{folder}: valid for {base_model}, as a run with {settings} reads it")
    else:
        print(
            f"{folder}: valid (row lengths and the chat template are checked against the base"
            " model when a run starts; it renders prompts with the model's chat template and"
            " checks rows against its context: --base-model DIR checks as the run does)"
        )
    return 0


# Why load_dataset leaves a valid row out (summary key -> what it means); lengths
# (`dataset.overlong: drop`) are checked by a run, not here.
LEFT_OUT = {"no_shared_prefix": "preference pairs whose sides diverge before the last turn"}


# What a run does without each optional table (as the report's `skipped` says it, after it).
WITHOUT = {
    "pretrain": "PPO-ptx is skipped",
    "flan": "the FLAN-style baseline is skipped",
    "t0": "the T0-style baseline is skipped",
}


def _what_runs(summary: dict) -> list[str]:
    """SFT's source and the optional tables not given: a run's report says both only after
    training; a user checking a dataset learns them here."""
    absent = [f"{name} ({why})" for name, why in WITHOUT.items() if name not in summary["tables"]]
    lines = [f"SFT trains on: {summary['sft_source']}"]
    return lines + ([f"no table: {', '.join(absent)}"] if absent else [])


def _left_out(summary: dict) -> str:
    from instructflow.tasks.dataset_report import left_out_rows, rows_named

    counts = [
        f"{key}={summary[key]} ({why}{left_out_rows(summary)})"
        for key, why in LEFT_OUT.items()
        if summary.get(key)
    ]
    # dataset.overlong "drop" (with --base-model: lengths are known only then)
    too_long = {k: v for k, v in summary.get("overlong", {}).items() if k != "policy"}
    named = summary.get("overlong_rows", {})
    counts += [
        f"{c['dropped']} too long ({file}: {rows_named(c['dropped'], named[file]['dropped'])})"
        for file, c in too_long.items()
        if c.get("dropped")
    ]
    return ", ".join(counts) or "none"


def add_commands(sub) -> None:
    """Register these subcommands on the `instructflow` parser."""
    data = sub.add_parser(
        "data", help="Generate, verify or validate data.", description="Data commands."
    )
    data_sub = data.add_subparsers(dest="data_command", required=True)
    gen = data_sub.add_parser(
        "generate",
        help="Regenerate data/ and record it with DVC.",
        description="Regenerate data/ for every profile from a seed, then `dvc add data` and `dvc push`.",
    )
    gen.add_argument(
        "--seed",
        type=int,
        default=0,
        help="world seed (default 0, the version committed in data.dvc)",
    )
    gen.add_argument("--no-dvc", action="store_true", help="write data/ only; leave data.dvc alone")
    gen.set_defaults(func=_cmd_data_generate)
    add = data_sub.add_parser(
        "add",
        help="Validate a dataset directory and put it under DVC.",
        description="Validate DIR (prompts, demonstrations, preferences), then `dvc add DIR` (and push to the default remote); commit DIR.dvc afterwards.",
    )
    add.add_argument("dir", help="the dataset directory, inside the project")
    add.set_defaults(func=_cmd_data_add)
    hub = data_sub.add_parser(
        "from-hub",
        help="Gather a Hub dataset's split files into one table with a split column.",
        description="Read every shard of every split of a Hub dataset snapshot (SNAPSHOT or "
        "SNAPSHOT/data: train-00000-of-00002.parquet, test.jsonl, ...) and write "
        "OUT/<table>.parquet with a `split` column, as `run --data OUT` reads it.",
    )
    hub.add_argument("snapshot", help="the downloaded dataset's folder")
    hub.add_argument("out", help="the dataset directory to write the table into")
    hub.add_argument(
        "--table", default="preferences", choices=["preferences", "prompts", "demonstrations"]
    )
    hub.add_argument(
        "--split",
        action="append",
        default=[],
        metavar="NAME=SPLIT",
        help="what a Hub split is here: train, valid, test, skip, or hash (split by the stable "
        "hash, as rows without a split column: a dataset without a validation split gets one; "
        "e.g. train_prefs=hash; train, test, validation need none); repeat per split",
    )
    hub.set_defaults(func=_cmd_data_from_hub)
    ver = data_sub.add_parser(
        "verify",
        help="Check data/ (or DIR) against data.dvc (or DIR.dvc).",
        description="Check data/ against data.dvc, or a dataset directory put under DVC with"
        " `data add DIR` against DIR.dvc. Exit 0 when they match; else exit 2, one line per"
        " file that differs (changed, missing or added).",
    )
    ver.add_argument(
        "dir", nargs="?", help="the dataset directory (default: data/, against data.dvc)"
    )
    ver.set_defaults(func=_cmd_data_verify)
    val = data_sub.add_parser(
        "validate",
        help="Validate one JSONL table, or a dataset directory.",
        description="Validate a JSONL file against one of the embedded world's table schemas (--kind), or a dataset directory (prompts, demonstrations, preferences, in any shape `run --data` reads) as a run would; row lengths and the chat template with --base-model.",
    )
    val.add_argument("file", help="path to the JSONL file, or to a dataset directory")
    val.add_argument(
        "--base-model",
        help="a dataset directory only: render and length-check its rows with this model's"
        " tokenizer and chat template, as `run --data --base-model` does",
    )
    val.add_argument(
        "--params",
        help="a dataset directory only: the JSON file of run settings `run --params` takes"
        " (its dataset settings and sampling room apply)",
    )
    val.add_argument(
        "--kind",
        type=_kind,
        choices=KINDS,
        help="which table schema to check a file against (not for a directory)",
    )
    val.set_defaults(func=_cmd_data_validate)
