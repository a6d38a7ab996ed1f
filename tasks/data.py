"""The data stage: make sure data/ is the version data.dvc names, then validate it.

data/ holds one folder per profile (smoke, tiny, small), all generated from
one seed, so one data.dvc versions every profile and a smoke run and a tiny
run of the same commit share a data version.

Plain functions first; the Prefect task that wraps them is at the bottom.
"""

import fcntl
import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import pandas as pd
from prefect import task

from instructflow.tasks import data_version, tracking
from instructflow.tasks.stage import import_closure_digest, prefect_options
from instructflow.tasks.tables import (
    TableError,
    check_user_splits,
    load_table,
    read_jsonl,
    write_jsonl,
)
from instructflow.world import layout
from instructflow.world.build import build_world
from instructflow.world.people import pairwise_agreement
from instructflow.world.profiles import PROFILES

DEFAULT_DATA_SEED = 0

# Which schema validates each table.
TABLE_KINDS: dict[str, str] = {
    layout.SFT_TRAIN: "demonstrations",
    layout.SFT_VALID: "demonstrations",
    layout.RM_TRAIN: "prompts",
    layout.RM_VALID: "prompts",
    layout.PPO_TRAIN: "prompts",
    layout.PPO_VALID: "prompts",
    layout.EVAL_TEST: "prompts",
    layout.FLAN_MIXTURE: "mixture",
    layout.T0_MIXTURE: "mixture",
    layout.PRETRAIN_TRAIN: "pretrain",
    layout.PRETRAIN_VALID: "pretrain",
    layout.PUBLIC_SUITE: "public_suite",
    layout.LABELER_OVERLAP: "comparisons",
}


def write_profile(folder: Path, profile: str, seed: int) -> None:
    """Write every table of one profile's world: byte-stable for a given (profile, seed)."""
    for rel, rows in build_world(profile, seed).items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".json"):
            path.write_text(
                json.dumps(rows, sort_keys=True, indent=2, ensure_ascii=False) + "\n",
                encoding="utf-8",
            )
        else:
            write_jsonl(path, rows)


def generate(
    root: Path, seed: int = DEFAULT_DATA_SEED, profiles: tuple[str, ...] = tuple(PROFILES)
) -> Path:
    """Regenerate data/ from scratch (built aside, then swapped in, so it is never half-written)."""
    target = root / "data"
    staging = Path(tempfile.mkdtemp(prefix=".data-", dir=root))
    try:
        for profile in profiles:
            write_profile(staging / profile, profile, seed)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@dataclass(frozen=True)
class DataVersion:
    md5: str
    matches_dvc: bool
    restored_by: str  # "present", "dvc pull" or "regenerated"
    restored_from: str = ""  # a DVC cache or remote, or a seed ("" when present)


# The CLI's preflight restores a missing data/ before the flow starts (in this process);
# the flow's own gate then finds data/ present and must still say how it got there.
_RESTORED: dict[Path, DataVersion] = {}


def _outside_any_run() -> bool:
    """Whether no Prefect flow or task run is running here (the CLI, before its flow)."""
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is None and TaskRunContext.get() is None


@contextmanager
def data_lock(root: Path) -> Iterator[None]:
    """Hold the project's data lock while inside (waiting for another process that holds it).

    Two first runs at once (a schedule's and one from the UI, on a fresh clone) both
    find data/ missing: without it each restores it, the second deleting the folder the
    first is already reading, and both store it in DVC's cache, whose own lock makes one
    of them give up.
    """
    folder = root / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".data.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def ensure_data(root: Path, allow_mismatch: bool = False) -> DataVersion:
    """data/ as data.dvc names it: restored when missing, refused when different.

    On a fresh clone data/ is absent: DVC's cache or remote is tried first,
    then regeneration from the default seed, checked against data.dvc. The
    first gate after a restore made outside any run (the CLI's preflight) in this
    process reports that restore, not "present".
    """
    with data_lock(root):
        restored_by, restored_from = "present", ""
        if not (root / "data").is_dir():
            source = data_version.restore_source(root)
            if data_version.pull(root) and (root / "data").is_dir():
                restored_by, restored_from = "dvc pull", source
            else:
                generate(root)
                restored_by = "regenerated"
                restored_from = (
                    f"seed {DEFAULT_DATA_SEED}, as nothing could be pulled from {source}"
                )
        try:
            # keep: every version a run used must come back with `dvc checkout` (or `dvc
            # pull`) after data.dvc has moved on, so matching data/ goes to DVC's cache and
            # remote.
            md5, matches = data_version.verify(root, keep=True), True
        except data_version.DataMismatchError:
            if not allow_mismatch:
                raise
            md5, matches = data_version.current_md5(root), False
    version = DataVersion(md5, matches, restored_by, restored_from)
    if restored_by != "present":
        if _outside_any_run():  # a run that restored it says so itself
            _RESTORED[root.resolve()] = version
    elif (earlier := _RESTORED.pop(root.resolve(), None)) and earlier.md5 == md5:
        return earlier
    return version


def describe(version: dict) -> str:
    """The run log's line on the data gate's `version` (a DataVersion as a dict)."""
    if version["restored_by"] == "present":
        how = "present"
    else:
        verb = "restored by dvc pull" if version["restored_by"] == "dvc pull" else "regenerated"
        how = f"missing: {verb} from {version['restored_from']}"
    return f"data/ is DVC version {version['md5']} ({how})"


def version_tags(version: dict) -> dict[str, str]:
    """The MLflow parent run's tags on the data gate's `version`; a restore's only if one ran."""
    tags = {
        "dvc_data_md5": version["md5"],
        "data_mismatch": str(not version["matches_dvc"]).lower(),
    }
    if version["restored_by"] != "present":
        tags |= {"data_restored_by": version["restored_by"]}
        tags |= {"data_restored_from": version["restored_from"]}
    return tags


def validate_profile(folder: Path) -> dict[str, pd.DataFrame]:
    """Validate every table of one profile (lazily: all problems at once); return the frames."""
    frames, problems = {}, []
    for rel, kind in TABLE_KINDS.items():
        try:
            frames[rel] = load_table(folder / rel, kind)
        except TableError as error:
            problems += error.problems  # keep going: report every bad table at once
    if problems:
        raise TableError(problems)
    check_user_splits({str(folder / rel): frames[rel] for rel in layout.PROMPT_TABLES})
    return frames


def labeler_agreement(folder: Path) -> float:
    """Agreement of two training labelers on the same K candidates (the qualification set)."""
    rows = read_jsonl(folder / layout.LABELER_OVERLAP)
    first, second = rows[0::2], rows[1::2]
    return pairwise_agreement(
        [r["ranking"] for r in first],
        [r["ranking"] for r in second],
        [r["responses"] for r in first],
    )


@dataclass(frozen=True)
class DataSummary:
    """What later stages need to know about the data, and what the data stage logs."""

    md5: str
    profile_dir: str
    table_rows: dict[str, int]
    family_counts: dict[str, int]
    labeler_agreement: float


def summarize(folder: Path, md5: str) -> DataSummary:
    """Validate one profile's tables (nothing trains before this passes) and count them."""
    frames = validate_profile(folder)
    families: Counter[str] = Counter()
    for rel in layout.PROMPT_TABLES:
        families.update(frames[rel]["family"])
    return DataSummary(
        md5=md5,
        profile_dir=str(folder),
        table_rows={rel: len(frame) for rel, frame in frames.items()},
        family_counts=dict(sorted(families.items())),
        labeler_agreement=labeler_agreement(folder),
    )


def summary_metrics(summary: DataSummary) -> dict[str, float]:
    """Flat, namespaced metrics for MLflow (data/rows/sft/train, data/family/add, ...)."""
    metrics = {
        f"data/rows/{rel.removesuffix('.jsonl')}": float(n) for rel, n in summary.table_rows.items()
    }
    metrics |= {f"data/family/{fam}": float(n) for fam, n in summary.family_counts.items()}
    metrics["data/labeler_agreement"] = summary.labeler_agreement
    return metrics


# --- Prefect wrappers -------------------------------------------------------

DATA_CODE = import_closure_digest("instructflow.tasks.data")


@task(name="restore-data", version=DATA_CODE)
def restore_data_task(root: str, allow_mismatch: bool) -> dict:
    """The gate: never cached, so every run checks data/ against data.dvc."""
    return asdict(ensure_data(Path(root), allow_mismatch))


@task(**prefect_options("validate-data", DATA_CODE))
def validate_data_task(profile_dir: str, md5: str, out_dir: str, parent_run_id: str) -> dict:
    """Validate and describe the data in a nested MLflow run; log the tables as MLflow datasets."""
    with tracking.stage_run("data", parent_run_id) as run:
        summary = summarize(Path(profile_dir), md5)
        metrics = summary_metrics(summary)
        settings = {"profile_dir": profile_dir, "dvc_data_md5": md5}
        tracking.batched.add_params(run.info.run_id, settings)
        tracking.log_final_metrics(run.info.run_id, metrics)  # with the settings: one write
        # The digest is the DVC md5 of data/, so MLflow's dataset and DVC's version agree;
        # the context is the stage that reads the table (its folder).
        tables = [
            (pd.read_json(Path(profile_dir) / rel, lines=True), Path(profile_dir) / rel, rel)
            for rel in (layout.SFT_TRAIN, layout.RM_TRAIN, layout.PPO_TRAIN, layout.EVAL_TEST)
        ]
        tracking.log_tables([(*t, md5[:32], t[2].split("/")[0]) for t in tables])
        mlflow.log_dict(asdict(summary), "data_summary.json")
        result = asdict(summary) | {"mlflow_run_id": run.info.run_id, "metrics": metrics}
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        # its run ended first (a lost server waited for), as every stage's (tasks/tracked.py)
        return tracking.finish_stage(Path(out_dir), run.info.run_id, result)
