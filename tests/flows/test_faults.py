"""Faults a long run meets, end to end through `instructflow run`: a server down at start,
SIGTERM, kill -9 at random points of SFT, the reward model and PPO, then a run that fails
after its evaluation.

The CLI runs in a subprocess (its own session, so leftover processes can be
found) against the session's Prefect test server, in a fresh project root
with its own SQLite MLflow store. The training stages checkpoint every one or
two steps so that a kill lands between checkpoints.
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from instructflow.tasks import concurrency, tracking
from tests.conftest import cli_env, cli_output, start_cli
from tests.flows.contract import SMOKE_POLICY
from tests.live_stack import free_port


def session_processes(sid: int) -> list[int]:
    """PIDs still alive in a session (the CLI's children, if any were orphaned)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields: state, ppid, pgrp, session
            found.append(int(stat.parent.name))
    return found


def wait_for_checkpoint(
    root: Path, stage: str, proc: subprocess.Popen, timeout: float = 900
) -> None:
    deadline = time.monotonic() + timeout
    while not list((root / "runs" / stage).glob("*/resume/step-*")):
        if proc.poll() is not None:
            raise AssertionError(
                f"the run ended before {stage} checkpointed:\n{proc.stdout.read()[-3000:]}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no {stage} checkpoint within {timeout} s")
        time.sleep(0.02)


def mlflow_runs(root: Path) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
    return client.search_runs([experiment.experiment_id]) if experiment else []


@pytest.mark.parametrize(
    "service, command",
    [
        ("MLFLOW_TRACKING_URI", ["run", "--profile", "smoke"]),
        ("PREFECT_API_URL", ["run", "--profile", "smoke"]),
        # the registry commands too: they waited minutes on MLflow's retries, then said
        # "lost a service mid-run ... resume"
        ("MLFLOW_TRACKING_URI", ["promote", "--version", "1", "--reason", "x"]),
        ("MLFLOW_TRACKING_URI", ["evaluate", "champion", "--profile", "smoke"]),
    ],
)
def test_an_unreachable_server_fails_fast_in_one_line_naming_its_uri(service, command, tmp_path):
    # given a project whose MLflow server (or Prefect API) is down
    uri = f"http://127.0.0.1:{free_port()}"
    env = cli_env(tmp_path, **{service: uri if service != "PREFECT_API_URL" else uri + "/api"})
    (tmp_path / "data.dvc").write_text("")
    started = time.monotonic()
    # when a command that needs it starts
    done = subprocess.run(
        [sys.executable, "-m", "instructflow.flows.cli", *command],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    # then it fails within 30 s with one line naming the URI, and trained nothing
    assert time.monotonic() - started < 30
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and uri in lines[0] and "unreachable" in lines[0], done.stderr
    assert not (tmp_path / "runs").exists()


def test_a_prefect_api_set_in_the_prefect_profile_is_checked_as_the_variable_is(tmp_path):
    # given a project whose Prefect profile (`prefect config set PREFECT_API_URL=...` under
    # the project's PREFECT_HOME, .prefect/) names a server that is down, and no variable
    uri = f"http://127.0.0.1:{free_port()}/api"
    (tmp_path / ".prefect").mkdir()
    (tmp_path / ".prefect" / "profiles.toml").write_text(
        f'active = "ephemeral"\n\n[profiles.ephemeral]\nPREFECT_API_URL = "{uri}"\n'
    )
    (tmp_path / "data.dvc").write_text("")
    env = {k: v for k, v in cli_env(tmp_path).items() if k != "PREFECT_API_URL"}
    # when a run starts
    done = subprocess.run(
        [sys.executable, "-m", "instructflow.flows.cli", "run", "--profile", "smoke"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    # then one line names the server and where it is set (it died in Prefect's traceback)
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and uri in lines[0] and "unreachable" in lines[0], done.stderr
    assert "`prefect config unset PREFECT_API_URL`" in lines[0], done.stderr
    assert not (tmp_path / "runs").exists()


def test_a_run_outside_a_project_is_refused_without_writing_there(tmp_path):
    # given a folder that is no project (no .dvc/ there or above)
    env = cli_env(tmp_path)
    # when a run starts there
    done = subprocess.run(
        [sys.executable, "-m", "instructflow.flows.cli", "run", "--profile", "smoke"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    # then one line says why and how to make one, and no MLflow store or run is left there
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "is not a DVC project" in line and "init --no-scm" in line
    assert not (tmp_path / "mlflow").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_sigterm_stops_a_run_within_10_s_with_a_checkpoint_and_nothing_left_running(
    prefect_harness, make_project, fast_smoke
):
    # given a run in the middle of pretraining the base model
    root = make_project()
    params = fast_smoke(base={"steps": 3000, "checkpoint_every": 10})
    proc = start_cli(root, params, cli_env(root))
    wait_for_checkpoint(root, "base_model", proc)
    # when it receives SIGTERM
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    output = cli_output(proc, 60)
    stopped_s = time.monotonic() - sent
    # then it stopped within 10 s, saying so, with the exit status of SIGTERM
    assert stopped_s < 10, (stopped_s, output[-3000:])
    assert proc.returncode == 128 + signal.SIGTERM, output[-3000:]
    assert output.strip().splitlines()[-1].startswith("instructflow: interrupted by SIGTERM")
    # and the loop wrote a checkpoint at the step where it stopped
    stopped_at = re.search(r"checkpoint at step (\d+) kept", output)
    assert stopped_at, output[-3000:]
    (resume,) = (root / "runs" / "base_model").glob("*/resume")
    assert (resume / f"step-{int(stopped_at[1]):09d}").is_dir()
    # and MLflow says KILLED for the pipeline run and the stage, nothing RUNNING
    statuses = {r.data.tags.get("stage", "pipeline"): r.info.status for r in mlflow_runs(root)}
    assert statuses["pipeline"] == "KILLED" and statuses["base_model"] == "KILLED", statuses
    # and Prefect recorded the flow run as crashed, not running
    from prefect.client.orchestration import get_client

    parent = next(r for r in mlflow_runs(root) if "stage" not in r.data.tags)
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(parent.data.tags["prefect_flow_run_id"]).state
    assert state.type.value in ("CRASHED", "CANCELLED", "FAILED"), state
    # and no process of the run is left
    assert session_processes(proc.pid) == []


def test_ctrl_c_in_a_terminal_stops_a_run_in_seconds_and_its_temporary_server_after(
    make_project, fast_smoke
):
    from instructflow.tasks.leftovers import ephemeral_servers

    # given a run with Prefect's temporary server (no PREFECT_API_URL), mid-pretraining
    root = make_project()
    env = {k: v for k, v in cli_env(root).items() if k != "PREFECT_API_URL"}
    proc = start_cli(root, fast_smoke(base={"steps": 3000, "checkpoint_every": 10}), env)
    wait_for_checkpoint(root, "base_model", proc)
    assert ephemeral_servers(str(root / ".prefect")), "the run has no temporary server"
    # when Ctrl-C sends SIGINT to the terminal's whole process group (the run's session)
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    output = cli_output(proc, 120)
    stopped_s = time.monotonic() - sent
    # then the run stopped within seconds, saying so (not "lost a service": the server lived)
    assert stopped_s < 20, (stopped_s, output[-3000:])
    assert proc.returncode == 128 + signal.SIGINT, output[-3000:]
    # (the last line is Prefect's "Stopping temporary server", at exit)
    last = output.strip().splitlines()[-2:]
    assert any(line.startswith("instructflow: interrupted by SIGINT") for line in last), last
    assert "lost a service" not in output
    # and its flow run was recorded as crashed before the server stopped; no server is left
    assert "Finished in state Crashed" in output
    assert ephemeral_servers(str(root / ".prefect")) == {}
    assert session_processes(proc.pid) == []


@pytest.mark.parametrize(
    "send",
    [
        pytest.param(lambda pid: os.killpg(pid, signal.SIGINT), id="ctrl-c-to-the-group"),
        # A scheduler's `kill PID`: the seeds hear nothing unless the sweep passes it on
        pytest.param(lambda pid: os.kill(pid, signal.SIGTERM), id="sigterm-to-the-sweep"),
    ],
)
def test_a_signal_stops_a_sweep_and_its_seed_processes_in_seconds(make_project, fast_smoke, send):
    # given a sweep of two seeds (a process each) with the temporary server, mid-pretraining
    root = make_project()
    env = {k: v for k, v in cli_env(root).items() if k != "PREFECT_API_URL"}
    params = fast_smoke(base={"steps": 3000, "checkpoint_every": 10})
    proc = start_cli(root, params, env, "sweep", "--seeds", "0", "1", "--threads", "1")
    wait_for_checkpoint(root, "base_model", proc)
    # when Ctrl-C sends SIGINT to the terminal's process group, or SIGTERM reaches the sweep
    sent = time.monotonic()
    send(proc.pid)
    output = cli_output(proc, 120)
    # then the sweep stopped within seconds, saying so, and left no process behind (its
    # seeds' pool workers kept the interpreter from exiting: it hung for minutes)
    assert time.monotonic() - sent < 30, output[-3000:]
    name = re.search(r"interrupted by (SIG[A-Z]+)", output)
    assert name and proc.returncode == 128 + signal.Signals[name[1]], output[-3000:]
    assert output.count("instructflow: interrupted by") == 1
    # by the run's own handlers, not Prefect's SIGTERM handler, which left the sweep unaware
    # of the signal: it gave its seeds, who heard nothing, 10 s to stop on their own
    assert "aborted by a termination signal" not in output, output[-3000:]
    # (multiprocessing's resource tracker leaves when it sees the sweep gone: give it a moment)
    deadline = time.monotonic() + 10
    while session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert session_processes(proc.pid) == []
    # and the sweep's MLflow run ended KILLED, as its seeds' did; none is left RUNNING
    runs = mlflow_runs(root)
    sweeps = [r for r in runs if r.data.tags.get("kind") == "seed_sweep"]
    assert [r.info.status for r in sweeps] == ["KILLED"], [r.info.status for r in runs]
    assert not [r for r in runs if r.info.status == "RUNNING"]


@pytest.fixture(scope="module")
def reference(first_run) -> dict:
    """An uninterrupted run with the same parameters the killed runs use: the session's first run."""
    return json.loads((first_run["root"] / "reports" / "latest" / "report.json").read_text())


@pytest.fixture(scope="module")
def killed_and_resumed(prefect_harness, make_project, fast_smoke) -> dict:
    """Runs killed (SIGKILL) a random moment after a checkpoint of SFT, of the reward model, of PPO; then one more run."""
    seed = int(os.environ.get("INSTRUCTFLOW_KILL_SEED", random.randrange(10**6)))
    print(f"kill seed {seed} (INSTRUCTFLOW_KILL_SEED={seed} replays it)")
    rng = random.Random(seed)
    root = make_project()
    params = fast_smoke()  # it checkpoints every step or two
    env = cli_env(root)
    # Each killed run starts where the one before stopped.
    for stage in ("sft", "reward_model", "ppo"):
        proc = start_cli(root, params, env)
        wait_for_checkpoint(root, stage, proc)
        time.sleep(rng.uniform(0.0, 0.5))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    started = time.monotonic()
    proc = start_cli(root, params, env)
    output = cli_output(proc, 900)
    assert proc.returncode == 0, output[-4000:]
    print(f"the resumed run took {time.monotonic() - started:.0f} s")
    report = json.loads((root / "reports" / "latest" / "report.json").read_text())
    return {"root": root, "params": params, "output": output, "report": report}


@pytest.mark.slow
def test_killed_during_sft_rm_and_ppo_the_next_run_resumes_and_reports_as_if_never_killed(
    killed_and_resumed, reference
):
    root, output, report = (killed_and_resumed[k] for k in ("root", "output", "report"))
    # then the final report equals the uninterrupted run's, field by field
    for field in ("labelers", "reward_model", "policies", "status"):
        assert report[field] == reference[field], field
    assert report["gate"]["promoted"] == reference["gate"]["promoted"]
    # and what the killed runs left was cleared: their MLflow runs are KILLED, none RUNNING
    runs = mlflow_runs(root)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.info.status for r in parents) == ["FINISHED", "KILLED", "KILLED", "KILLED"]
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert "an earlier run" in output  # it said what it cleared
    # and the stages the killed runs had finished came from the cache
    final = next(r for r in parents if r.info.status == "FINISHED")
    cached = {
        r.data.tags["stage"]: r.data.tags.get("cached") == "true"
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == final.info.run_id
    }
    assert cached["base_model"] and cached["sft"] and cached["reward_model"], cached
    # and no concurrency slot is left taken
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(concurrency.REGISTRY).active_slots == 0
    assert not concurrency.training_slot_taken()


@pytest.mark.slow
def test_a_run_failing_after_its_evaluation_leaves_reports_latest_where_it_was(
    killed_and_resumed,
):
    from prefect import task
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    from instructflow.flows.params import PipelineParams
    from instructflow.flows.pipeline import rlhf_pipeline
    from instructflow.tasks import registry

    root = killed_and_resumed["root"]
    before = json.loads((root / "reports" / "latest" / "report.json").read_text())
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    versions = len(client.search_model_versions(f"name = '{SMOKE_POLICY}'"))

    @task(name="registry", version="broken")
    def broken_registry(**_kwargs) -> dict:
        raise RuntimeError("the registry is down")

    # given the same project, every stage cached, and a registry stage that fails
    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        temporary_settings({PREFECT_LOCAL_STORAGE_PATH: str(root / "runs" / "prefect-results")}),
    ):
        monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(root))
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        monkeypatch.setattr(registry, "register_and_gate_task", broken_registry)
        # when the run fails after its evaluation
        with pytest.raises(RuntimeError, match="registry is down"):
            rlhf_pipeline(PipelineParams(**killed_and_resumed["params"]))
    # then reports/latest is the report it was
    assert json.loads((root / "reports" / "latest" / "report.json").read_text()) == before
    # and the failed run's own report says failed, and where
    (failed,) = [
        json.loads(f.read_text())
        for f in (root / "reports").glob("*/report.json")
        if json.loads(f.read_text())["status"] == "failed"
    ]
    assert failed["stopped_at_stage"] == "registry" and "registry is down" in failed["error"]
    assert failed["policies"]  # it had got as far as the evaluation
    # and nothing was registered
    assert len(client.search_model_versions(f"name = '{SMOKE_POLICY}'")) == versions
