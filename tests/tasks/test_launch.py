"""`--processes N`: a stage's function under `accelerate launch` (gloo on this CPU machine).

That N processes compute what one does is tests/tasks/test_processes.py.
"""

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from instructflow.models.checkpoints import TrainingInterrupted, clear_stop, request_stop
from instructflow.tasks import launch, tracking
from instructflow.tasks.stage import is_permanent
from tests.tasks import launch_targets

ROOT = Path(__file__).resolve().parents[2]


def test_one_process_runs_in_this_process(tmp_path):
    logged = []
    result = launch.run(
        lambda log, x: log(0, {"x": x}) or x + 1,
        {"x": 1},
        processes=1,
        work_dir=tmp_path,
        log=lambda step, metrics, *_: logged.append(metrics),
        log_prefix="t",
    )
    assert result == 2 and logged == [{"x": 1}] and not (tmp_path / launch.FOLDER).exists()


@pytest.mark.slow  # launches two processes (about 15-30 s on 2 cores)
def test_a_failing_process_fails_the_stage_with_its_message_in_one_line(
    tmp_path, monkeypatch, capfd
):
    # the launched processes import the target from tests/
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    started = time.perf_counter()
    with (
        pytest.raises(launch.ProcessFailed) as failed,
        tracking.stage_run("probe", None) as run,  # as a stage's task opens it
    ):
        launch.run(
            launch_targets.log_then_fail_on_rank_one,
            {},
            processes=2,
            work_dir=tmp_path,
            log=None,
            log_prefix="probe",
        )
    assert str(failed.value) == (
        "process 1 of 2 failed: ValueError: demonstrations.jsonl row 7: response is empty"
    )
    # bad input: the task does not retry it (tasks.stage.retry_only_transient)
    assert isinstance(failed.value, launch.ProcessInputError) and is_permanent(failed.value)
    assert time.perf_counter() - started < 60  # rank 0 was stopped, not left waiting
    # rank 0 alone logs, to the stage's MLflow run and the console
    history = MlflowClient(tracking.tracking_uri()).get_metric_history(
        run.info.run_id, "probe/rank"
    )
    assert [(m.step, m.value) for m in history] == [(0, 0.0)]
    out = capfd.readouterr().out
    assert out.count("[probe] step 0: rank=0") == 1 and "rank=1" not in out
    assert out.count("a line every process prints") == 1  # rank 0 speaks for the stage


def _left_behind(work_dir: Path) -> list[int]:
    """Processes still running whose environment names this launch's stop file."""
    marker = str(work_dir / launch.FOLDER / launch.STOP).encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _when_training(work_dir: Path, action) -> threading.Thread:
    """Call `action` (from a thread) once both launched processes are training."""
    folder = work_dir / launch.FOLDER

    def wait() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if all((folder / f"training{rank}").exists() for rank in (0, 1)):
                action()
                return
            time.sleep(0.1)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow  # launches two processes, twice
def test_a_stop_request_reaches_the_processes_and_an_exception_ends_them_all(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    args = {"processes": 2, "log": None, "log_prefix": "t"}
    # given a stop request (what SIGINT/SIGTERM make) while the processes train:
    # their loops stop after a step, and the stage stops as a one-process one does
    first = tmp_path / "stop"
    _when_training(first, request_stop)
    try:
        with pytest.raises(TrainingInterrupted, match="2-process stage"):
            launch.run(launch_targets.train_until_stopped, {}, work_dir=first, **args)
    finally:
        clear_stop()
    reasons = [p.read_text() for p in (first / launch.FOLDER).glob("rank*.error")]
    assert any(r.startswith("TrainingInterrupted: stopped after step") for r in reasons), reasons
    assert _left_behind(first) == []

    # given an exception in the task while they train (the grace period ending, a cancel):
    # it propagates, and neither the launcher nor any process outlives it
    def raise_here(_signum, _frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGUSR1, raise_here)
    second = tmp_path / "exception"
    main = threading.main_thread().ident
    _when_training(second, lambda: signal.pthread_kill(main, signal.SIGUSR1))
    try:
        with pytest.raises(KeyboardInterrupt):
            launch.run(launch_targets.train_until_stopped, {}, work_dir=second, **args)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert (second / launch.FOLDER / "training1").exists()  # they were training when it came
    assert _left_behind(second) == []


def _two_until_stopped(work_dir):
    """Two processes of `train_until_stopped`, launched as a stage launches them."""
    return launch.run(
        launch_targets.train_until_stopped, {}, processes=2, work_dir=work_dir, log=None,
        log_prefix="t",
    )  # fmt: skip


@pytest.mark.slow  # launches two processes
def test_a_process_killed_mid_stage_is_named_as_the_cause(tmp_path, monkeypatch):
    # given rank 1 killed by SIGKILL while both train (the OOM killer, a user's kill -9):
    # rank 0 then fails in its next collective with gloo's "Connection closed by peer",
    # which the stage used to report as the cause ("process 0 of 2 failed: RuntimeError")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))

    def kill_rank_one() -> None:
        for pid in _left_behind(tmp_path):  # the launcher and both processes
            if b"\0RANK=1\0" in Path(f"/proc/{pid}/environ").read_bytes():
                os.kill(pid, signal.SIGKILL)

    _when_training(tmp_path, kill_rank_one)
    with pytest.raises(launch.ProcessFailed) as failed:
        _two_until_stopped(tmp_path)
    message = str(failed.value)
    assert message.startswith("process 1 of 2 ended without an error of its own"), message
    assert "SIGKILL" in message and len(message.splitlines()) == 1
    assert not is_permanent(failed.value)  # not bad input: the task retries (and resumes)
    assert _left_behind(tmp_path) == []


@pytest.mark.slow  # launches two processes
def test_killing_the_launcher_mid_stage_leaves_no_process_training(tmp_path, monkeypatch):
    # given Accelerate's launcher (torchrun's agent) killed by SIGKILL while both train:
    # its workers, in sessions of their own, went on training as orphans, writing into
    # the stage's folder beside the task's retry of the stage
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))

    def kill_launcher() -> None:
        for pid in _left_behind(tmp_path):
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes()
            except (ProcessLookupError, FileNotFoundError):  # ended since it was listed
                continue
            if b"\0RANK=" not in b"\0" + environ:
                os.kill(pid, signal.SIGKILL)

    _when_training(tmp_path, kill_launcher)
    try:
        with pytest.raises(launch.ProcessFailed):
            _two_until_stopped(tmp_path)
        deadline = time.monotonic() + 10
        while _left_behind(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _left_behind(tmp_path) == []  # the workers ended with their launcher
    finally:
        for pid in _left_behind(tmp_path):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow  # starts one process (about 10 s on 2 cores)
def test_a_stage_in_a_process_of_its_own_computes_what_it_computes_here(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = launch_targets.seeded_training(lambda *_: None, seed=3)
    finally:
        torch.set_num_threads(threads)
    # given the same function, run beside another stage (tasks.launch.own_process, one thread)
    with tracking.stage_run("probe", None) as run, launch.own_process(1):
        there = launch.run(
            launch_targets.seeded_training,
            {"seed": 3},
            processes=1,
            work_dir=tmp_path,
            log=None,
            log_prefix="probe",
        )
    # then it ran in another process, at one thread, and computed the same weights bit for bit
    assert there["pid"] != os.getpid() and there["threads"] == 1
    assert there["weights"] == here["weights"]
    # and its metrics reached the stage's MLflow run; nothing is left in the work folder
    history = MlflowClient(tracking.tracking_uri()).get_metric_history(
        run.info.run_id, "probe/loss"
    )
    assert [m.step for m in history] == [0, 1, 2, 3, 4]
    assert not (tmp_path / launch.FOLDER).exists()


def test_a_given_base_model_is_copied_in_one_process_whatever_processes_says():
    assert launch.takes_processes("base_model", {"base_model": None})  # pretrained here
    assert not launch.takes_processes("base_model", {"base_model": "/models/qwen"})
    assert launch.takes_processes("sft", {"base_model": "/models/qwen"})
    assert not launch.takes_processes("evaluation", {})


def test_a_base_model_with_dropout_is_said_not_to_match_one_process(tmp_path, capsys):
    from transformers import GPT2Config

    # given an own GPT-2 config with GPT-2's default dropout and one without any
    with_dropout, without = tmp_path / "dropout", tmp_path / "no-dropout"
    GPT2Config(n_layer=2, n_head=2, n_embd=32).save_pretrained(with_dropout)
    zero = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
    GPT2Config(n_layer=2, n_head=2, n_embd=32, **zero).save_pretrained(without)
    # when a run with 2 processes checks each, twice, and one process checks the first
    for _ in range(2):
        launch.warn_dropout_differs(2, str(with_dropout))
        launch.warn_dropout_differs(2, str(without))
    launch.warn_dropout_differs(1, str(with_dropout))
    # then the model with dropout is warned of once, naming its fields and the claim it breaks
    said = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(said) == 1 and said[0].startswith("instructflow: warning: ")
    assert "attn_pdrop 0.1, embd_pdrop 0.1, resid_pdrop 0.1" in said[0]
    assert "processes = 2" in said[0] and "within float rounding" in said[0]
    # and GPT-2's double-heads summary dropout, which no stage trains, is not counted
    assert "summary_first_dropout" not in said[0]
