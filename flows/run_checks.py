"""What `instructflow run` checks before it starts Prefect's server or imports its flow.

Each check is the one the flow makes (a run from the Prefect form or API has no command
line to check first); here a refusal comes in seconds, before MLflow's and Prefect's
imports, as one message naming file, row and field, recorded as a FAILED MLflow run.
"""

import sys

from instructflow.tasks.paths import project_root


def checked_data(params, folder: str | None = None) -> int | None:
    """The dataset of a run on `--data` checked by the checks its flow makes, with the base
    model in `folder` (by default a local folder given, else nothing yet: a Hub id is fetched
    first); a refusal's exit status, else None (its warnings said)."""
    from instructflow.flows import own_data_checks

    if (folder := folder or own_data_checks.early_model_folder(params)) is None:
        return None
    from instructflow.flows.explained_errors import bad_input_errors
    from instructflow.tasks.provenance import pin_threads
    from instructflow.tasks.table_errors import refused

    pin_threads(params.threads)  # before any torch work
    if params.processes > 1:  # said before the dataset's checks, which may refuse the run
        from instructflow.tasks.launch import warn_dropout_differs

        warn_dropout_differs(params.processes, folder)
    try:
        summary = own_data_checks.preflight(params.model_copy(update={"base_model": folder}))
    except bad_input_errors() as error:  # recorded in MLflow as the embedded world's are
        return refused_run(params, refused(error))
    for line in own_data_checks.notes_to_say(summary):
        print(f"instructflow: {line}", file=sys.stderr, flush=True)
    return None


def checked_params(params):
    """`params` with its threads pinned, its base model and inputs checked; or, for a refusal,
    the command's exit status (the refusal printed and recorded)."""
    from instructflow.tasks import preflight
    from instructflow.tasks.provenance import pin_threads

    pin_threads(params.threads)  # before any torch work (inter-op threads can be set only once)
    import torch

    from instructflow.tasks.launch import warn_dropout_differs, warn_oversubscribed

    warn_oversubscribed(params.processes, torch.get_num_threads())
    local = params
    if params.base_model:  # a missing model fails here, before Prefect or any stage starts
        model_dir, refusal = preflight.local_base_model(params)
        if refusal:
            return refused_run(params, refusal)
        local = params.model_copy(update={"base_model": model_dir})
        warn_dropout_differs(params.processes, model_dir)
    if params.data:
        from instructflow.flows.own_data_checks import NEEDS_BASE, early_model_folder

        if not params.base_model:
            print(f"instructflow: {preflight.refused(NEEDS_BASE)}", file=sys.stderr)
            return 2
        # A local folder's was checked first (flows/cli_run.py); a Hub id's now it is fetched.
        if not early_model_folder(params) and (refusal := checked_data(params, local.base_model)):
            return refusal
    else:
        # Checked here, before the flow starts: a refusal comes in seconds.
        _, refusal = preflight.refusal_of(local, project_root())
        if refusal:
            return refused_run(params, refusal)
    return params


def refused_run(params, refusal: str) -> int:
    """Print a refusal (before MLflow's slow start-up), record it as a FAILED MLflow run."""
    from instructflow.tasks import preflight

    print(f"instructflow: {refusal}", file=sys.stderr, flush=True)
    run_id = preflight.record_refusal(params, refusal)
    print(f"instructflow: MLflow run {run_id} marked FAILED", file=sys.stderr)
    return 2
