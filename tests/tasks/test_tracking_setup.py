"""The project's MLflow experiment is laid out by MLflow's UI as model training, not GenAI."""

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
