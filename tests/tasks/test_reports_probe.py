"""The gate writes the registry only when the run's report can be written after it.

The report (which describes the gate) is written after the registry stage: with reports/
read-only or full, a run registered a version (and could move `champion`), then failed
with "run the same command again" (found by hand: a dataset run with reports/ on a
read-only tmpfs registered its candidate, then stopped at the report).
"""

import errno

import pytest

from instructflow.flows import dataset_gate
from instructflow.tasks import registry
from instructflow.tasks.storage_faults import storage_fault_message
from tests.conftest import small_filesystem


def _registry_untouchable(monkeypatch):
    def touched(*args, **kwargs):
        raise AssertionError("the registry was reached")

    monkeypatch.setattr(registry, "MlflowClient", touched)


def _gate_calls():
    yield lambda: registry.register_and_gate_task.fn(*[None] * 16)
    yield lambda: dataset_gate.register_and_gate(None, None, None)


@pytest.mark.parametrize("gate", list(_gate_calls()), ids=["embedded world", "dataset"])
def test_a_read_only_reports_folder_stops_the_gate_before_the_registry(tmp_path, monkeypatch, gate):
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(tmp_path))
    _registry_untouchable(monkeypatch)
    with small_filesystem(tmp_path / "reports", "64k", read_only=True):
        with pytest.raises(OSError) as e:
            gate()
    assert e.value.errno == errno.EROFS
    said = storage_fault_message(e.value)
    assert said.startswith(f"cannot write {tmp_path / 'reports'}") and "run the same" in said


def test_a_full_reports_folder_stops_the_gate_before_the_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(tmp_path))
    _registry_untouchable(monkeypatch)
    with small_filesystem(tmp_path / "reports", "64k") as reports:
        with pytest.raises(OSError):  # fill it
            (reports / "filler").write_bytes(b"\0" * 2**20)
        with pytest.raises(OSError) as e:
            dataset_gate.register_and_gate(None, None, None)
    assert storage_fault_message(e.value).startswith("the disk is full while writing")
