"""Two first runs at once on a project without data/ (a scheduled run and one from the UI
on a fresh clone): data/ is restored once, and neither run reads a folder being replaced."""

import multiprocessing
from pathlib import Path


def _first_run_gate(root: str, start, markers: str, results) -> None:
    """A run's data gate in a process of its own, released together with the other's; a
    restore writes a marker (each restore is the smoke profile only, to keep it short)."""
    from instructflow.tasks import data, data_version

    real_generate = data.generate

    def generate(at: Path) -> Path:
        (Path(markers) / str(multiprocessing.current_process().pid)).touch()
        return real_generate(at, profiles=("smoke",))

    data.generate = generate
    data_version.pull = lambda _root: False  # nothing to pull: each would regenerate
    start.wait()
    version = data.ensure_data(Path(root), allow_mismatch=True)
    results.put((version.md5, version.restored_by))


def test_two_first_runs_at_once_restore_data_once(make_project, tmp_path):
    root = make_project(with_data=False)
    markers = tmp_path / "restores"
    markers.mkdir()
    spawn = multiprocessing.get_context("spawn")
    start, results = spawn.Barrier(2), spawn.Queue()
    runs = [
        spawn.Process(target=_first_run_gate, args=(str(root), start, str(markers), results))
        for _ in range(2)
    ]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=240)
    assert [run.exitcode for run in runs] == [0, 0]
    found = sorted(results.get(timeout=5) for _ in runs)
    # one restore; the other run waited and found it there, the same version
    assert len(list(markers.iterdir())) == 1
    assert [how for _, how in found] == ["present", "regenerated"]
    assert found[0][0] == found[1][0]
