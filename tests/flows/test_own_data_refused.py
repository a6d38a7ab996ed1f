"""A bad dataset stops `instructflow run --data` before any flow or training: one message, file/row/field."""

import json

from instructflow.flows.cli import main
from tests.own_data import REFUSING_TEMPLATE, write_hh_dataset
from tests.tiny_models import tiny_llama


def _project(tmp_path, monkeypatch):
    """An empty project root, an HH-style dataset and a tiny Llama made for it."""
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    data = write_hh_dataset(tmp_path / "hh", n_pairs=30)
    return root, data, tiny_llama(tmp_path / "llama", [p.read_text() for p in data.iterdir()])


def _recorded_refusal(root, refusals: int = 1) -> str:
    """The MLflow runs refusals leave (one each, FAILED): the newest one's reason; nothing
    registered."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs] == ["FAILED"] * refusals
    assert client.search_registered_models() == []
    return runs[0].data.tags["failure_reason"]


def test_a_bad_dataset_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys):
    root, data, llama = _project(tmp_path, monkeypatch)
    prefs = [json.loads(line) for line in (data / "preferences.jsonl").read_text().splitlines()]
    prefs[4]["chosen"] = prefs[4]["chosen"] + "\n\nHuman: and?"  # ends on a user turn
    (data / "preferences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in prefs))
    (data / "demonstrations.jsonl").write_text(
        (data / "demonstrations.jsonl").read_text()
        + json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "Say it. " * 400},
                    {"role": "assistant", "content": "it"},
                ],
                "user_id": "user-2",
            }
        )
        + "\n"
    )

    code = main(["run", "--profile", "smoke", "--data", str(data), "--base-model", str(llama)])

    assert code == 2
    err = capsys.readouterr().err
    # worded as every refusal of `run` is (a bad --base-model, the embedded world's tables)
    assert err.startswith("instructflow: refused before training: 1 problem found:\n"), err
    assert "preferences.jsonl row 5 field 'chosen': does not end on an assistant turn" in err
    assert "Traceback" not in err
    # nothing started: no stage output, nothing registered; the refusal is one FAILED
    # MLflow run with the reason, as on the embedded world
    assert not (root / "runs").exists()
    assert "preferences.jsonl row 5 field 'chosen'" in _recorded_refusal(root)

    # the too-long demonstration is named once the conversation is fixed
    prefs[4]["chosen"] = prefs[4]["chosen"].removesuffix("\n\nHuman: and?")
    (data / "preferences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in prefs))
    assert main(["run", "--data", str(data), "--base-model", str(llama)]) == 2
    err = capsys.readouterr().err
    assert (
        "demonstrations.jsonl row 31 field 'messages': row needs" in err and "> context 256" in err
    )


def test_a_bad_row_is_refused_before_prefects_server_starts(tmp_path, monkeypatch, capsys):
    from instructflow.tasks import temporary_server

    root, data, llama = _project(tmp_path, monkeypatch)
    # given a preference row that ends on a user turn, and a run that would say when it
    # starts Prefect's temporary server
    prefs = [json.loads(line) for line in (data / "preferences.jsonl").read_text().splitlines()]
    prefs[2]["chosen"] = prefs[2]["chosen"] + "\n\nHuman: and?"
    (data / "preferences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in prefs))
    started = []
    monkeypatch.setattr(
        temporary_server, "start_early", lambda: started.append(1) or temporary_server.EarlyStart()
    )
    # when a run on the dataset starts from a local model folder
    code = main(["run", "--profile", "smoke", "--data", str(data), "--base-model", str(llama)])
    # then the row is refused naming file, row and field, and no server was started for it
    # (it waited for the server's start and MLflow's and Prefect's imports: ~10 s)
    assert code == 2
    err = capsys.readouterr().err
    assert "preferences.jsonl row 3 field 'chosen': does not end on an assistant turn" in err
    assert started == []
    assert "preferences.jsonl row 3 field 'chosen'" in _recorded_refusal(root)


def test_a_dataset_named_in_params_is_checked_as_one_named_by_data(tmp_path, monkeypatch, capsys):
    root, data, llama = _project(tmp_path, monkeypatch)
    # given a project root that is no DVC project (a run on a dataset needs none), a bad
    # preference row, and the dataset and model named in a --params file, not by flags
    prefs = [json.loads(line) for line in (data / "preferences.jsonl").read_text().splitlines()]
    prefs[1]["chosen"] = prefs[1]["chosen"] + "\n\nHuman: and?"
    (data / "preferences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in prefs))
    params = tmp_path / "own.json"
    params.write_text(json.dumps({"profile": "smoke", "data": str(data), "base_model": str(llama)}))
    # when the run starts from that file
    code = main(["run", "--params", str(params)])
    # then the row is refused, as with --data (it was refused as outside a DVC project)
    assert code == 2
    err = capsys.readouterr().err
    assert "preferences.jsonl row 2 field 'chosen': does not end on an assistant turn" in err
    assert "DVC" not in err


def test_a_broken_model_folder_is_refused_with_a_dataset_as_without_one(
    tmp_path, monkeypatch, capsys
):
    root, data, llama = _project(tmp_path, monkeypatch)
    # given a model folder whose weights are missing, and one without its config
    (llama / "model.safetensors").unlink()
    no_config = tmp_path / "no-config"
    no_config.mkdir()
    for broken, named in (
        (llama, "field 'model.safetensors': no weights"),
        (no_config, "field 'config.json': missing"),
        (tmp_path / "no-such-model", "field 'base_model': no such directory"),
    ):
        # when a run on the dataset starts from it
        code = main(["run", "--profile", "smoke", "--data", str(data), "--base-model", str(broken)])
        # then it is refused in one line naming the folder and what is wrong, before any stage,
        # worded alike whichever check found it (a folder that is not there is found first)
        assert code == 2
        err = capsys.readouterr().err
        assert err.startswith("instructflow: refused before training: 1 problem found:\n"), err
        assert f"{broken} {named}" in err and "Traceback" not in err
        assert not (root / "runs").exists()
    assert "no such directory" in _recorded_refusal(root, refusals=3)


def test_a_model_folder_missing_a_shard_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    from transformers import AutoModelForCausalLM

    root, data, llama = _project(tmp_path, monkeypatch)
    # given the model saved in shards (as a big model is), one of them deleted
    model = AutoModelForCausalLM.from_pretrained(llama, local_files_only=True)
    (llama / "model.safetensors").unlink()
    model.save_pretrained(llama, max_shard_size="60KB")
    shards = sorted(llama.glob("model-*-of-*.safetensors"))
    assert len(shards) > 1
    shards[-1].unlink()
    # when a run on the dataset starts from it
    code = main(["run", "--profile", "smoke", "--data", str(data), "--base-model", str(llama)])
    # then it is refused in one line naming the missing shard, before any stage (no retries)
    assert code == 2
    err = capsys.readouterr().err
    assert f"{shards[-1]} field 'weights': missing: model.safetensors.index.json names it" in err
    assert "Traceback" not in err and err.count("\n") < 5
    assert not (root / "runs").exists()
    assert _recorded_refusal(root)


def test_a_conversation_the_chat_template_refuses_is_refused_naming_the_row(
    tmp_path, monkeypatch, capsys
):
    from transformers import AutoTokenizer

    root, data, llama = _project(tmp_path, monkeypatch)
    # given a model whose chat template refuses a system turn (as Gemma's), and a
    # demonstration that starts with one
    tokenizer = AutoTokenizer.from_pretrained(llama)
    tokenizer.chat_template = REFUSING_TEMPLATE
    tokenizer.save_pretrained(llama)
    demos = [json.loads(line) for line in (data / "demonstrations.jsonl").read_text().splitlines()]
    demos[6]["messages"].insert(0, {"role": "system", "content": "Be brief."})
    (data / "demonstrations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in demos))
    # when a run on the dataset starts from it
    code = main(["run", "--profile", "smoke", "--data", str(data), "--base-model", str(llama)])
    # then it is refused naming the file, the row and the template's message, before any stage
    assert code == 2
    err = capsys.readouterr().err
    assert (
        "demonstrations.jsonl row 7 field 'messages': the base model's chat template refuses"
        " this conversation: System role not supported"
    ) in err
    assert "Traceback" not in err
    assert not (root / "runs").exists()
    assert _recorded_refusal(root)
