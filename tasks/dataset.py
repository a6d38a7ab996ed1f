"""A user's dataset directory, validated and normalised to the pipeline's own tables.

A dataset is a directory holding tables named ``prompts``, ``demonstrations``
and ``preferences`` (and optionally ``pretrain``, ``flan``, ``t0``), each as
``<name>.jsonl`` or ``<name>.parquet``. Only ``preferences`` is required:
without demonstrations SFT trains on the preferred responses; without
prompts PPO and evaluation use the preferences' prompts.

``load_dataset`` reads every table, validates it with pandera (lazily: every
problem of every table, each naming file, row and field), turns its rows into
Items (instructflow.tasks.dataset_items: the three preference shapes become
K-wise comparisons, K = 2..9, a pair being K = 2), checks lengths against the
base model's context, and assigns splits (instructflow.tasks.splits). Nothing
is trained on a dataset that fails: the TableError lists what to fix.
instructflow.tasks.dataset_layout.write_layout then writes the tables in the
layout the stages read (instructflow.world.layout), so SFT, the reward model,
PPO and evaluation run on a user's data through the same code as on the
embedded world.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pandera.pandas as pa

from instructflow.tasks import dataset_schemas as ds
from instructflow.tasks import split_sizes, splits, trl_forms
from instructflow.tasks.conversations import PromptRenderer, drop_message_extras, message_at_fault
from instructflow.tasks.dataset_config import DatasetConfig
from instructflow.tasks.dataset_files import find_tables, read_rows, unread_files
from instructflow.tasks.dataset_items import (
    Item,
    demonstration_items,
    preference_items,
    prompt_items,
)
from instructflow.tasks.dataset_names import meant_columns, naming_warnings, nearest
from instructflow.tasks.json_messages import json_text_problems
from instructflow.tasks.lengths import LengthCheck, overlong_hint
from instructflow.tasks.schemas import ROW_CHECK_FIELDS
from instructflow.tasks.tables import LINE, Problem, TableError, _schema_problems

EMPTY_TABLE = "the table is empty (no rows)"  # as instructflow.tasks.input_checks says it
NAMED_ROWS = 5  # rows left out are counted; this many of them are named


@dataclass
class Dataset:
    """The normalised tables and what the import found (the summary goes to MLflow and the report)."""

    prompts: list[Item]
    demonstrations: list[Item]
    preferences: list[Item]
    extra: dict[str, list[dict]]  # pretrain / flan / t0 rows as given
    split_of: dict[int, str]  # id(item) -> split
    summary: dict[str, Any]


def validate(
    path: Path, rows: list[tuple[int, dict]], schema: pa.DataFrameSchema
) -> tuple[list[Problem], set[str]]:
    """Problems of a table under its schema (lazy: all of them) and the columns it ignores."""
    file = str(path)
    columns = sorted({k for _, obj in rows for k in obj})
    missing = [c for c, col in schema.columns.items() if col.required and c not in columns]
    if missing:
        return [Problem(file, 0, c, _missing(c, columns)) for c in missing], set()
    frame = pd.DataFrame(
        [obj for _, obj in rows], index=[n - 1 for n, _ in rows], columns=columns, dtype=object
    )
    frame = frame.astype(object).where(frame.notna(), None)
    problems: list[Problem] = []
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as e:
        # A row-wise check's failure is listed under whichever columns held
        # non-null values; report it once, on the field the check is about.
        cases = e.failure_cases
        row_checks = cases["check"].astype(str).isin(ROW_CHECK_FIELDS)
        cases.loc[row_checks, "column"] = (
            cases.loc[row_checks, "check"].astype(str).map(ROW_CHECK_FIELDS)
        )
        for case in cases.index[row_checks]:  # and show that field's value, not another column's
            row, field = cases.at[case, "index"], cases.at[case, "column"]
            cases.at[case, "failure_case"] = frame.at[row, field] if field in frame else None
        for case in cases.index:  # a conversation's problem shows the message at fault
            value = cases.at[case, "failure_case"]
            if (shown := message_at_fault(str(cases.at[case, "check"]), value)) is not value:
                cases.at[case, "failure_case"] = shown
        problems = _schema_problems(e, frame, file, set())
    by_row = dict(rows)
    return [_absent(p, by_row.get(p.row)) for p in problems], set(columns) - set(schema.columns)


def _missing(column: str, columns: list[str]) -> str:
    twin = nearest(column, columns)  # Prompt, or prompts, for prompt
    return "missing required column" + (f" (the table has {twin!r})" if twin else "")


def _absent(problem: Problem, obj: dict | None) -> Problem:
    """A null that is really a field the row lacks says so, naming a differently cased twin."""
    if problem.message != "is null" or obj is None or problem.field in obj:
        return problem
    twins = [k for k in obj if k.lower() == problem.field.lower()]
    hint = f" (the row has {twins[0]!r}: field names are case-sensitive)" if twins else ""
    return replace(problem, message=f"missing field{hint}")


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# TRL's unpaired preference form (KTO's) rates one answer per row: there is no pair to rank.
UNPAIRED = (
    "; these are TRL's unpaired preference form (prompt, completion, label: KTO's), one"
    " answer rated per row: the reward model learns from answers ranked against each other,"
    " so give a prompt's preferred and dispreferred answers as chosen and rejected in one row"
)


def load_dataset(
    folder: str | Path,
    cfg: DatasetConfig = DatasetConfig(),
    lengths: LengthCheck | None = None,
) -> Dataset:
    """Read, validate, normalise and split a dataset directory; raise TableError listing every problem."""
    folder = Path(folder)
    tokenizer = lengths.tokenizer if lengths is not None else None
    render = PromptRenderer(tokenizer)  # the chat template's refusals are problems of rows
    paths, problems = find_tables(folder)
    summary: dict[str, Any] = {"dir": str(folder.resolve()), "tables": {}, "ignored_columns": {}}
    loaded: dict[str, list[Item]] = {"prompts": [], "demonstrations": [], "preferences": []}
    extra: dict[str, list[dict]] = {}
    for name, path in paths.items():
        rows, read_problems = read_rows(path)
        problems += read_problems
        if not rows:  # an unreadable file's problem is all there is to say about its columns
            if not read_problems:
                problems.append(Problem(str(path), 0, LINE, EMPTY_TABLE))
            continue
        if as_json := json_text_problems(path, rows):  # read as text, the JSON is trained on
            problems += as_json
            continue
        rows, extras = drop_message_extras(rows)  # as other columns: ignored, and listed
        if extras:
            summary.setdefault("ignored_message_keys", {})[name] = extras
        given, written = len(rows), render.keep_written(path, name, rows)
        rows, converted, form_problems = trl_forms.own_forms(path, name, rows)
        problems += form_problems
        if converted:  # how many rows were in TRL's forms (instructflow.tasks.trl_forms)
            summary.setdefault("trl_forms", {})[name] = converted
        if not rows:  # every row a broken TRL form: no columns left to check
            continue
        columns = {k for _, obj in rows for k in obj}
        if name == "prompts":
            schema = ds.prompts_schema(columns)
        elif name == "demonstrations":
            schema = ds.demonstrations_schema(columns)
        elif name == "preferences":
            shape = ds.preference_shape(columns)
            if shape is None:
                message = f"columns {sorted(columns)} fit none of the shapes: responses+ranking, prompt+chosen+rejected, chosen+rejected conversations"
                message += meant_columns(columns, name)  # Chosen for chosen, say
                if {"completion", "label"} <= columns:  # a form TRL has that no shape reads
                    message += UNPAIRED
                problems.append(Problem(str(path), 0, "<columns>", message))
                continue
            schema = ds.preferences_schema(shape)
            summary["preference_shape"] = shape
        elif name == "pretrain":
            schema = ds.text_schema()
        else:
            schema = ds.mixture_schema()
        found, ignored = validate(path, rows, schema)
        problems += trl_forms.as_written(found, name, written)
        summary["tables"][name] = {"file": path.name, "rows": given, "md5": md5_of(path)}
        if ignored:
            summary["ignored_columns"][name] = sorted(ignored)
        if found or read_problems or form_problems:
            continue  # normalising needs valid rows; the problems are reported below
        if name == "prompts":
            loaded[name] = prompt_items(path, rows, render)
        elif name == "demonstrations":
            loaded[name] = demonstration_items(path, rows, render)
        elif name == "preferences":
            loaded[name], unshared = preference_items(path, rows, shape, render)
            # counted for the metrics, and the first rows named: a person looks at those
            summary["no_shared_prefix"] = len(unshared)
            summary["no_shared_prefix_rows"] = unshared[:NAMED_ROWS]
        else:
            extra[name] = [obj for _, obj in rows]
    if folder.is_dir():  # what is not read is listed, with the name a near miss was meant as
        summary["unread_files"] = unread_files(folder, paths.values())
        summary["naming_warnings"] = naming_warnings(summary, paths)
    problems += render.named(trl_forms.as_written)  # the fields as the user wrote them
    if problems:
        raise TableError(problems)
    rows_read = Counter(i.file for v in loaded.values() for i in v)
    summary["rendering"] = render.how(rows_read)

    emptied: dict[str, Problem] = {}  # tables whose every row was too long for the context
    if lengths is not None:
        summary["overlong"] = {"policy": cfg.overlong}
        read = [item for items in loaded.values() for item in items]
        if cfg.overlong == "refuse" and (none_fit := lengths.no_prompt_fits(read, folder)):
            raise TableError([none_fit])  # rather than every row, and a hint that cannot help
        for name in loaded:
            given = len(loaded[name])
            loaded[name], rows, found = lengths.apply(loaded[name], cfg.overlong)
            problems += found
            if rows and name in paths:  # counted for the metrics, the first rows named
                file = paths[name].name
                summary["overlong"][file] = {what: len(numbers) for what, numbers in rows.items()}
                named = {what: numbers[:NAMED_ROWS] for what, numbers in rows.items()}
                summary.setdefault("overlong_rows", {})[file] = named
            if given and not loaded[name] and not found:  # dropped, every row: none left
                emptied[name] = lengths.none_left(paths[name], given, cfg.overlong)
        if hint := overlong_hint(problems, lengths.max_len, lengths.max_new_tokens):
            problems.append(hint)
        problems += emptied.values()  # after the hint: it counts the rows refused
    every = [item for items in loaded.values() for item in items]
    if not loaded["preferences"]:
        if "preferences" not in emptied:  # else its problem says why
            problems.append(Problem(str(paths["preferences"]), 0, "preferences", "no usable rows"))
    elif problems:  # with the users or prompts in two splits: those do not wait on lengths
        problems += _split(every, cfg, {})[1]
    if problems:
        raise TableError(problems)

    split_of, problems = _split(every, cfg, summary)
    summary["split_counts"] = {
        name: dict(Counter(split_of[id(i)] for i in items))
        for name, items in loaded.items()
        if items
    }
    stated = {n: {bool(i.stated_split) for i in items} for n, items in loaded.items() if items}
    problems = problems or split_sizes.empty_split_problems(summary["split_counts"], paths, stated)
    pretrain_problems, pretrain_warnings = (
        split_sizes.pretrain_split(extra["pretrain"], paths["pretrain"])
        if "pretrain" in extra
        else ([], [])
    )
    problems = problems or pretrain_problems
    if not problems:  # the judge's groups, as the layout names them (a prompt without a user)
        test = {i.user_id or i.prompt for i in loaded["preferences"] if split_of[id(i)] == "test"}
        problems = split_sizes.judge_groups_problems(len(test), paths["preferences"])
    if problems:
        raise TableError(problems)
    summary["split_warnings"] = (
        split_sizes.thin_splits(summary["split_counts"], cfg.valid_fraction, cfg.test_fraction)
        + split_sizes.few_test_rows(
            summary["split_counts"],
            len(
                {
                    i.prompt_key
                    for i in loaded["prompts"] + loaded["preferences"]
                    if split_of[id(i)] == "test"
                }
            ),
        )
        + splits.repeated_rows(
            {
                name: [
                    ((i.prompt_key, *i.responses), split_of[id(i)], i.file, i.row) for i in items
                ]
                for name, items in loaded.items()
                if name != "prompts"  # a prompt asked again is no repeat of an answer
            }
        )
        + render.mixed_warnings(rows_read)
        + splits.users_across_splits((i.file, i.user_id, split_of[id(i)]) for i in every)
        + splits.prompts_across_splits((i.file, i.row, i.split_key, split_of[id(i)]) for i in every)
        + splits.orderless_pairs(loaded["preferences"])
        + pretrain_warnings
    )
    summary["k_counts"] = dict(
        sorted(Counter(len(i.responses) for i in loaded["preferences"]).items())
    )
    summary["sft_source"] = (
        "demonstrations"
        if loaded["demonstrations"]
        else "preferred responses (no demonstrations table)"
    )
    return Dataset(**loaded, extra=extra, split_of=split_of, summary=summary)


def _split(
    items: list[Item], cfg: DatasetConfig, summary: dict
) -> tuple[dict[int, str], list[Problem]]:
    rule = "user_id" if all(i.user_id for i in items) else "prompt_hash"
    summary["split_rule"] = rule

    def key(item: Item) -> str:
        return item.user_id if rule == "user_id" else item.split_key

    keyed = [splits.Keyed(i.file, i.row, key(i), i.stated_split) for i in items]
    stated, problems = splits.stated_splits(keyed, rule)
    problems += splits.missing_user_ids((i.file, i.row, i.user_id) for i in items)
    split_of = {
        id(i): splits.split_of(stated, key(i), cfg.valid_fraction, cfg.test_fraction) for i in items
    }
    return split_of, problems  # splits a stage reads but that got no rows: empty_split_problems
