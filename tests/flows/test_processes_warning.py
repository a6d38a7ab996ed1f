"""`--processes N` above the CPU threads on a machine without a GPU: said before the run."""

import pytest
import torch

from instructflow.flows.cli import main
from instructflow.tasks.launch import oversubscribed


def test_more_processes_than_threads_on_a_cpu_is_said(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert oversubscribed(2, 2) is None and oversubscribed(1, 1) is None
    note = oversubscribed(4, 2)
    # each of the 4 got max(1, 2 // 4) = 1 thread: 4 busy processes on 2 threads, silently
    # (a smoke run took 62 s with 4 processes against 36 s with 2)
    assert note.startswith("processes = 4 is more than the 2 CPU threads")
    assert "--processes 2" in note
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # each process has a GPU
    assert oversubscribed(4, 2) is None


def test_run_warns_before_anything_starts(tmp_path, monkeypatch, capsys):
    from instructflow.tasks import launch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # said once per process: another test of this worker may have said it already
    monkeypatch.setattr(launch, "_warned", set())
    # a run refused right after the settings are read (a dataset without a base model)
    args = ["run", "--profile", "smoke", "--threads", "1", "--processes", "2"]
    status = main([*args, "--data", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2
    assert "instructflow: warning: processes = 2 is more than the 1 CPU threads" in err


class _Stop(Exception):
    pass


def test_a_run_started_without_the_cli_is_warned_at_its_first_launch(tmp_path, monkeypatch, capsys):
    # given a run the Prefect form or API started: no CLI said anything before it
    from instructflow.tasks import launch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    monkeypatch.setattr(launch, "_warned", set(), raising=False)

    def no_launch(*_):
        raise _Stop

    monkeypatch.setattr(launch, "launch_command", no_launch)
    for _ in range(2):  # two multi-process stages
        with pytest.raises(_Stop):
            launch.run(print, {}, processes=3, work_dir=tmp_path, log=print, log_prefix=None)
    err = capsys.readouterr().err
    assert err.count("instructflow: warning: processes = 3 is more than the 1 CPU threads") == 1


def test_plan_warns_too(monkeypatch, capsys):
    from instructflow.tasks import launch, provenance

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(provenance, "available_cores", lambda: 2)
    monkeypatch.setattr(launch, "_warned", set(), raising=False)
    assert main(["plan", "--profile", "smoke", "--processes", "4"]) == 0
    assert "instructflow: warning: processes = 4 is more than the 2 CPU threads" in (
        capsys.readouterr().err
    )


def test_run_warns_before_anything_starts_that_a_base_model_with_dropout_will_not_match(
    tmp_path, monkeypatch, capsys
):
    from transformers import GPT2Config

    from instructflow.tasks import launch

    # given an own base model whose config has GPT-2's default dropout (0.1)
    model_dir = tmp_path / "own-gpt2"
    GPT2Config(n_layer=2, n_head=2, n_embd=32).save_pretrained(model_dir)
    monkeypatch.setattr(launch, "_warned_dropout", set(), raising=False)
    # when a run with 2 processes on it is checked (and refused: its dataset folder is empty)
    args = ["run", "--profile", "smoke", "--threads", "2", "--processes", "2"]
    (tmp_path / "data").mkdir()
    status = main([*args, "--base-model", str(model_dir), "--data", str(tmp_path / "data")])
    # then it was told, before anything started, that 2 processes will not match 1
    err = capsys.readouterr().err
    assert status == 2
    assert "instructflow: warning: the base model trains with dropout (" in err
    assert "will not match --processes 1's within float rounding" in err
