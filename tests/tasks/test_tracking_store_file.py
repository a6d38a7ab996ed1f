"""The MLflow SQLite store's file holds every run once the process that wrote them ends."""

import shutil
import subprocess
import sys
import textwrap


def test_a_copy_of_mlflow_db_alone_has_the_runs_written_before_exit(tmp_path):
    # given a process that logs a run to a SQLite store (write-ahead log on) and exits
    # without closing MLflow's pooled connections, as `instructflow run` does (SQLite
    # would fold the log into the file when the last connection closes)
    store = tmp_path / "mlflow.db"
    script = textwrap.dedent(
        f"""
        import os
        os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///{store}"
        os.environ["INSTRUCTFLOW_ROOT"] = "{tmp_path}"
        import mlflow
        from instructflow.tasks import tracking
        tracking.setup()
        with mlflow.start_run(run_name="kept") as run:
            mlflow.log_metric("m", 1.0)
        print(run.info.run_id)
        import gc
        gc.freeze()  # as the CLI freezes its heap (tasks/heap.py): nothing closes at exit
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    run_id = out.stdout.strip().splitlines()[-1]
    # when mlflow.db alone is copied (a backup), its log left behind
    copy = tmp_path / "backup" / "mlflow.db"
    copy.parent.mkdir()
    shutil.copy2(store, copy)
    # then the copy has the run, and the log it left is empty
    import sqlite3

    with sqlite3.connect(copy) as connection:
        rows = connection.execute("SELECT name FROM runs WHERE run_uuid = ?", (run_id,)).fetchall()
    assert rows == [("kept",)]
    wal = tmp_path / "mlflow.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
