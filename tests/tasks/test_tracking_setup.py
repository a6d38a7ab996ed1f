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


def test_a_store_a_full_disk_stopped_creating_is_removed_not_left_half_made(monkeypatch, tmp_path):
    import pytest

    from tests.conftest import small_filesystem

    # given a project whose mlflow/ folder is a file system too small for MLflow's tables
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = tmp_path / "mlflow" / "mlflow.db"
    with small_filesystem(tmp_path / "mlflow", "128k"):
        # when the first command creates the store there (it fills the disk)
        with pytest.raises(Exception, match="database or disk is full"):
            tracking.setup()
        # then no half-made store is left: the next one, with space again, failed on the
        # tables this one had made (`table assessments already exists`)
        assert not store.exists() and not store.with_name("mlflow.db-wal").exists()


def test_a_store_that_was_there_before_is_never_removed_on_a_full_disk(monkeypatch, tmp_path):
    import pytest

    from instructflow.tasks import tracking as module

    uri = _use_store(monkeypatch, tmp_path, "kept.db")
    tracking.setup()
    module._experiment_ids.clear()

    def full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(module.MlflowClient, "get_experiment_by_name", full)
    with pytest.raises(OSError):
        tracking.setup()
    assert (tmp_path / "kept.db").exists(), uri
