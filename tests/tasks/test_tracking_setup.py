"""The project's MLflow experiment as MLflow's UI lays it out: model training, datasets."""

from mlflow import MlflowClient

from instructflow.tasks import tracking


def _use_store(monkeypatch, tmp_path, name: str) -> str:
    uri = f"sqlite:///{tmp_path / name}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(tmp_path))
    return uri


def test_a_new_experiment_is_tagged_as_model_training(monkeypatch, tmp_path):
    uri = _use_store(monkeypatch, tmp_path, "new.db")
    experiment_id = tracking.setup()
    tags = MlflowClient(uri).get_experiment(experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"


def test_an_experiment_an_older_version_made_gets_the_tag(monkeypatch, tmp_path):
    uri = _use_store(monkeypatch, tmp_path, "old.db")
    client = MlflowClient(uri)
    old = client.create_experiment(tracking.EXPERIMENT)
    assert "mlflow.experimentKind" not in client.get_experiment(old).tags
    assert tracking.setup() == old
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"


def test_the_data_version_is_the_runs_dataset_input(monkeypatch, tmp_path):
    import mlflow

    uri = _use_store(monkeypatch, tmp_path, "inputs.db")
    tracking.setup()
    with mlflow.start_run() as run:
        tracking.log_data_version("world-smoke", tmp_path, "41b10d7be0390275d14c6f5bea3bbb1e.dir")
    (logged,) = MlflowClient(uri).get_run(run.info.run_id).inputs.dataset_inputs
    assert (logged.dataset.name, logged.dataset.digest) == (
        "world-smoke",
        "41b10d7be0390275d14c6f5bea3bbb1e.dir",
    )
    assert str(tmp_path) in logged.dataset.source
    assert [(t.key, t.value) for t in logged.tags] == [("mlflow.data.context", "training")]
