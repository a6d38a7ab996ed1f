"""The `evaluate_registered` flow: evaluate registered policies against SFT and against each other.

    instructflow evaluate champion challenger

Each model is a version number or an alias of a registered policy
(`instructflow-policy` unless `model_name` says otherwise). The
reference SFT checkpoint and the reward model are the ones recorded in the
first model's lineage tags, so the numbers are comparable with that run's
report.
"""

import itertools
import json
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, ConfigDict, Field

from instructflow.flows import explained_errors
from instructflow.tasks import env, evaluation, plots, report, tracking
from instructflow.tasks.evaluation import EvalConfig
from instructflow.tasks.paths import data_dir, reports_dir
from instructflow.tasks.registry_config import REWARD_MODEL, RegistryConfig
from instructflow.tasks.registry_lookup import evaluable_version
from instructflow.tasks.registry_rival import local_checkpoint


class EvaluateParams(BaseModel):
    """Which registered policies to evaluate, and how."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    models: list[str] = Field(
        ["champion", "challenger"], description="Versions or aliases of the registered policy."
    )
    model_name: str | None = Field(
        None,
        description="The registered policy model. Empty: where runs of `profile` register "
        "(instructflow-policy, or instructflow-policy-smoke on smoke).",
    )
    profile: str = Field("tiny", description="Which profile's test users to evaluate on.")
    seed: int = Field(0, description="Sampling seed.")
    # Named by the class, not `evaluation.EvalConfig`: inside this class body the field
    # `evaluation` shadows the module once assigned.
    evaluation: EvalConfig = Field(
        default_factory=EvalConfig, description="Decoding and evaluation settings."
    )


@flow(name="evaluate_registered", log_prints=True)
def evaluate_registered(params: EvaluateParams = EvaluateParams()) -> dict:
    logger = get_run_logger()
    env.apply_defaults()  # as rlhf_pipeline does
    explained_errors.keep_tracebacks_for_bugs()  # for a run a worker starts
    tracking.setup()
    client = MlflowClient()
    if params.model_name is None:
        params = params.model_copy(update={"model_name": RegistryConfig().names(params.profile)[0]})
    # Refs that name one version (`champion 2` with champion at v2) are one policy: a
    # model against itself is no head-to-head.
    versions: dict[str, tuple] = {}  # version number -> (the version, the refs naming it)
    for ref in params.models:
        version = evaluable_version(client, params.model_name, ref)
        versions.setdefault(str(version.version), (version, []))[1].append(ref)
    if len(versions) == 1 < len(params.models):
        logger.info("%s name one version: no head-to-head", " and ".join(params.models))
    first = next(iter(versions.values()))[0]
    sft_dir = mlflow.artifacts.download_artifacts(
        run_id=first.tags["sft_run_id"], artifact_path="model"
    )
    rm_name = first.tags.get("reward_model_name", REWARD_MODEL)
    rm_dir = local_checkpoint(rm_name, first.tags["reward_model_version"])
    profile_dir = data_dir() / params.profile
    policies = [
        evaluation.Policy(
            f"v{number} ({', '.join(refs)})",
            Path(local_checkpoint(params.model_name, number)),
        )
        for number, (_, refs) in versions.items()
    ]
    policies.append(evaluation.Policy("sft", Path(sft_dir)))

    with mlflow.start_run(
        run_name="evaluate-registered", tags={"models": ",".join(params.models)}
    ) as run:
        rows, _ = evaluation.evaluate(
            policies, Path(sft_dir), Path(rm_dir), profile_dir, params.evaluation, params.seed
        )
        tracking.log_metrics(evaluation.flat_metrics({k.split(" ")[0]: v for k, v in rows.items()}))
        head_to_head = {}
        for a, b in itertools.combinations(policies[:-1], 2):
            match = evaluation.head_to_head(a, b, profile_dir, params.evaluation, params.seed)
            head_to_head[f"{a.name} vs {b.name}"] = match
            win = match["win_rate"]
            logger.info(
                "%s vs %s: win rate %.3f (95%% CI %.3f-%.3f)",
                a.name,
                b.name,
                win["mean"],
                *win["ci95"],
            )
        result = {
            "run": {"mlflow_run_id": run.info.run_id, "models": params.models},
            "labelers": {},
            "reward_model": {},
            "policies": rows,
            "head_to_head": head_to_head,
        }
        folder = reports_dir() / "evaluations" / run.info.run_id
        figures = plots.report_plots(rows, folder)
        matches = (
            "\n## Head to head (held-out labelers)\n\n"
            + "\n".join(
                f"- {name}: {m['win_rate']['mean']:.3f} (95% CI {m['win_rate']['ci95'][0]:.3f}-{m['win_rate']['ci95'][1]:.3f})"
                for name, m in head_to_head.items()
            )
            + "\n"
        )
        url = env.mlflow_run_url(run.info.experiment_id, run.info.run_id)
        pictures = [str(f) for f in figures]
        markdown = report.to_markdown(result, mlflow_url=url, plots=pictures) + matches
        (folder / "report.json").write_text(json.dumps(result, indent=2))
        (folder / "report.md").write_text(markdown)
        # MLflow's and Prefect's Markdown cannot resolve file names: plots by MLflow URLs.
        web = report.log_report(folder, result, url, pictures, matches)
        create_markdown_artifact(
            markdown=web,
            key="evaluate-registered",
            description=", ".join(params.models),
        )
        logger.info("report: %s", folder / "report.md")
    return result
