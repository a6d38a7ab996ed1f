"""The environment the CLI and the flows set (instructflow.tasks.env): defaults only, yours win."""

import os
import subprocess
import sys

from instructflow.tasks.env import apply_defaults, defaults


def test_defaults_fill_only_what_is_unset(tmp_path, monkeypatch):
    # given a project root and a user who exported HF_HUB_OFFLINE=0
    (tmp_path / "data.dvc").write_text("outs: []\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("INSTRUCTFLOW_ROOT", raising=False)
    environ = {"HF_HUB_OFFLINE": "0"}
    # when the defaults are applied
    added = apply_defaults(environ)
    # then the exported value stands, and the rest are the project's
    assert environ["HF_HUB_OFFLINE"] == "0" and "HF_HUB_OFFLINE" not in added
    assert environ["PREFECT_HOME"] == str(tmp_path / ".prefect")
    assert environ["PREFECT_LOCAL_STORAGE_PATH"] == str(tmp_path / "runs" / "prefect-results")
    assert set(added) == set(defaults()) - {"HF_HUB_OFFLINE"}
    # and applying them again changes nothing
    assert apply_defaults(environ) == {}


def test_the_module_prints_shell_exports_of_what_is_unset(tmp_path, monkeypatch):
    # given an environment with only a project root and one exported setting
    env = {"INSTRUCTFLOW_ROOT": str(tmp_path), "HF_HUB_OFFLINE": "0"}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    # then `python -m instructflow.tasks.env` (what scripts/serve.sh evals) exports the rest
    out = subprocess.run(
        [sys.executable, "-m", "instructflow.tasks.env"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"export PREFECT_HOME={tmp_path / '.prefect'}\n" in out
    assert "HF_HUB_OFFLINE" not in out


def test_flow_runs_started_here_send_no_heartbeats_unless_you_asked(monkeypatch):
    from prefect.settings import get_current_settings

    from instructflow.tasks.env import HEARTBEAT_VARIABLE, no_flow_heartbeats

    # given no heartbeat setting of yours: inside, Prefect's engine sees heartbeats off
    monkeypatch.delenv(HEARTBEAT_VARIABLE, raising=False)
    prefect_default = get_current_settings().flows.heartbeat_frequency
    with no_flow_heartbeats():
        assert get_current_settings().flows.heartbeat_frequency is None
    # and outside, Prefect's own setting again
    assert get_current_settings().flows.heartbeat_frequency == prefect_default
    # given you exported a frequency, it stands (Prefect read it when it was imported)
    monkeypatch.setenv(HEARTBEAT_VARIABLE, "60")
    with no_flow_heartbeats():
        assert get_current_settings().flows.heartbeat_frequency == prefect_default


def test_heartbeats_off_keeps_every_other_setting_in_force_when_they_change(monkeypatch):
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    from instructflow.tasks.env import HEARTBEAT_VARIABLE, no_flow_heartbeats

    monkeypatch.delenv(HEARTBEAT_VARIABLE, raising=False)
    before = get_current_settings().api.url
    with no_flow_heartbeats():  # copies the settings in force
        assert get_current_settings().api.url == before
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}), no_flow_heartbeats():
        assert get_current_settings().api.url == "http://127.0.0.1:9/api"  # not the old copy
        assert get_current_settings().flows.heartbeat_frequency is None
    with no_flow_heartbeats():
        assert get_current_settings().api.url == before


def test_runs_against_a_tracking_server_print_no_mlflow_links(tmp_path, monkeypatch, capsys):
    # given the defaults of a flow run that logs to `make serve`'s MLflow server (a worker's)
    from types import SimpleNamespace

    from mlflow.store.tracking.rest_store import RestStore
    from mlflow.tracking._tracking_service.client import TrackingServiceClient

    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    for name, value in apply_defaults({}).items():
        monkeypatch.setenv(name, value)
    run = SimpleNamespace(
        info=SimpleNamespace(experiment_id="1", run_name="sft"), data=SimpleNamespace(tags={})
    )
    monkeypatch.setattr(RestStore, "get_run", lambda self, run_id: run)
    # when a stage's run ends, as MLflow ends it
    TrackingServiceClient("http://127.0.0.1:5000")._log_url("abc123")
    # then MLflow prints no "View run ... / View experiment ..." pair (two lines per stage in
    # the worker's log, 13 times a run, linking the GenAI layout): the report links the run
    assert "View run" not in capsys.readouterr().out


def test_artifact_downloads_draw_no_progress_bar(tmp_path, monkeypatch, capfd):
    # given the defaults of a run, and a run with a folder of artifacts (a logged model's)
    import mlflow

    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    for name, value in apply_defaults({}).items():
        monkeypatch.setenv(name, value)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # this test's own store, not the process's
    client = mlflow.MlflowClient(uri)
    artifacts = (tmp_path / "artifacts").as_uri()  # not ./mlruns in the working directory
    run = client.create_run(client.create_experiment("bars", artifact_location=artifacts))
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (folder / name).write_text("{}")
    client.log_artifacts(run.info.run_id, str(folder), "model")
    capfd.readouterr()
    # when it is downloaded, as the registry stage and `eval export` do
    mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, dst_path=str(tmp_path / "dl"), tracking_uri=uri
    )
    # then no "Downloading artifacts: 100%|..." bar lands between the log's lines
    assert "Downloading artifacts" not in capfd.readouterr().err
