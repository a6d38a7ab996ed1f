"""The stages a user's dataset adds: import (validate, normalise, split) and comparisons (the dataset's own).

- `import_dataset`: instructflow.tasks.dataset.load_dataset with the base model's
  tokenizer (chat template, lengths against its context), then
  instructflow.tasks.dataset_layout.write_layout into the stage's folder: every later
  stage reads its tables from there, as it reads data/<profile> on the
  embedded world. What the import found goes to MLflow (`data/...`).
- `comparisons`: the dataset's preferences replace sampling from SFT and the
  simulated labelers; the stage records what the reward model will train on.
Plain functions first; Prefect wrappers at the bottom.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import mlflow
from prefect import get_run_logger, task

from instructflow.tasks import tracking
from instructflow.tasks.dataset import DatasetConfig, load_dataset
from instructflow.tasks.dataset_layout import COMPARISONS, HELDOUT, write_layout
from instructflow.tasks.dataset_names import notes
from instructflow.tasks.lengths import length_check
from instructflow.tasks.split_sizes import ptx_mix_problems
from instructflow.tasks.stage import (
    content_digest,
    fresh_output_dir,
    import_closure_digest,
    prefect_options,
)
from instructflow.tasks.tables import Problem, TableError, read_jsonl
from instructflow.tasks.tracked import StageResult, finish_stage, tracked_stage

DATA_FOLDER = "data"  # under the import stage's output folder
CHANGED = (
    "changed while the run read it (the stage's cache key holds its content from before):"
    " run the same command again once it is saved"
)


def summary_metrics(summary: dict) -> dict[str, float]:
    """The import's counts as MLflow metrics: rows, splits, K, conversations, too-long rows."""
    metrics = {f"data/rows/{name}": float(t["rows"]) for name, t in summary["tables"].items()}
    for table, counts in summary["split_counts"].items():
        metrics |= {f"data/split/{table}/{split}": float(n) for split, n in counts.items()}
    metrics |= {f"data/k/{k}": float(n) for k, n in summary["k_counts"].items()}
    metrics["data/no_shared_prefix"] = float(summary.get("no_shared_prefix", 0))
    for file, counts in summary.get("overlong", {}).items():
        if isinstance(counts, dict):
            metrics |= {f"data/overlong/{file}/{what}": float(n) for what, n in counts.items()}
    return metrics


def import_dataset(
    data_dir: Path,
    base_model: str,
    cfg: DatasetConfig,
    max_new_tokens: int,
    out_dir: Path,
    tables: dict[str, str] | None = None,
    ptx_block_size: int | None = None,
) -> dict:
    """`tables`: file name -> content digest the stage's key holds; a table that no longer
    has it was edited after the run keyed the stage, and is refused rather than cached.
    `ptx_block_size`: PPO-ptx's (a pretrain table must fill a block of it)."""
    check = length_check(base_model, max_new_tokens)
    dataset = load_dataset(data_dir, cfg, check)
    if ptx_block_size and (found := ptx_mix_problems(dataset, check.tokenizer, ptx_block_size)):
        raise TableError(found)  # a run from the Prefect form: no CLI preflight said it
    if changed := [n for n, d in (tables or {}).items() if content_digest(data_dir / n) != d]:
        raise TableError([Problem(str(data_dir / n), 0, "<file>", CHANGED) for n in changed])
    written = write_layout(dataset, out_dir / DATA_FOLDER)
    return {"summary": dataset.summary, "written": written}


def comparison_metrics(folder: Path) -> dict[str, float]:
    metrics = {}
    for name, rel in (*COMPARISONS.items(), ("heldout", HELDOUT)):
        rows = read_jsonl(folder / rel)
        metrics[f"comparisons/rows_{name}"] = float(len(rows))
        for k, n in Counter(len(r["responses"]) for r in rows).items():
            metrics[f"comparisons/k{k}_{name}"] = float(n)
    return metrics


# --- Prefect wrappers -------------------------------------------------------------


@task(
    **prefect_options("import-dataset", import_closure_digest("instructflow.tasks.dataset_stage"))
)
def import_dataset_task(
    data_dir: str,
    base_model: str,
    cfg: DatasetConfig,
    max_new_tokens: int,
    out_dir: str,
    parent_run_id: str,
    tables: dict[str, str] | None = None,
    ptx_block_size: int | None = None,
) -> dict:
    out = fresh_output_dir(out_dir)
    with tracking.stage_run("data", parent_run_id) as run:
        # Refused data raises TableError here, before any training stage starts.
        result = import_dataset(
            Path(data_dir), base_model, cfg, max_new_tokens, out, tables, ptx_block_size
        )
        summary = result["summary"]
        mlflow.log_params(
            cfg.model_dump()
            | {
                "data_dir": data_dir,
                "split_rule": summary["split_rule"],
                "preference_shape": summary["preference_shape"],
                "rendering": summary["rendering"],
                "sft_source": summary["sft_source"],
            }
        )
        mlflow.set_tags({f"data_md5/{n}": t["md5"] for n, t in summary["tables"].items()})
        for line in notes(summary):  # ignored columns, files not read, likely typos
            get_run_logger().warning(line)
        metrics = summary_metrics(summary)
        tracking.log_metrics(metrics)
        mlflow.log_dict(summary, "dataset_summary.json")
        return finish_stage(
            out,
            run.info.run_id,
            result
            | {
                "profile_dir": str(out / DATA_FOLDER),
                "mlflow_run_id": run.info.run_id,
                "metrics": metrics,
            },
        )


@task(
    **prefect_options(
        "dataset-comparisons", import_closure_digest("instructflow.tasks.dataset_stage")
    )
)
def comparisons_task(profile_dir: str, out_dir: str, parent_run_id: str) -> StageResult:
    """The dataset's preferences as the reward model's comparisons (train/valid; heldout = test split)."""
    params = {"source": "dataset preferences (no sampling, no simulated labelers)"}
    with tracked_stage("comparisons", out_dir, parent_run_id, params) as stage:
        shutil.copytree(Path(profile_dir) / "comparisons", stage.out / "comparisons")
        return stage.done(comparison_metrics(stage.out), dir=str(stage.out))
