"""The README's commands in the order a new user types them, in one project root.

`make demo` (tiny) is stood in for by a smoke-sized run registered where tiny
registers (`instructflow-policy`), as the issue allows where time requires.
Then `make demo PROFILE=smoke` must neither crash nor touch that champion, and
a later run from another base model (a Llama with its own tokenizer) must be
able to play that champion: policies are compared as text.
"""

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from instructflow.flows.cli import main
from instructflow.tasks import registry
from instructflow.tasks.base_model import tokenizer_texts
from tests.flows.contract import SMOKE_POLICY
from tests.tiny_models import tiny_llama

pytestmark = pytest.mark.slow

TINY_POLICY = registry.POLICY_MODEL  # where `make demo` (tiny) registers


def _params_file(folder: Path, name: str, fields: dict) -> str:
    path = folder / f"{name}.json"
    path.write_text(json.dumps(fields))
    return str(path)


def _report(root: Path) -> dict:
    return json.loads((root / "reports" / "latest" / "report.json").read_text())


def test_readme_commands_in_a_row(
    prefect_harness, make_project, fast_smoke, tmp_path, monkeypatch, capsys
):
    root = make_project()
    monkeypatch.setenv("INSTRUCTFLOW_ROOT", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")

    # 1. `make demo` (stand-in): a run registered as instructflow-policy, made champion
    demo = fast_smoke(registry={"model_name": TINY_POLICY})
    assert (
        main(["run", "--profile", "smoke", "--params", _params_file(tmp_path, "demo", demo)]) == 0
    )
    first = _report(root)["gate"]
    assert (first["model_name"], first["policy_version"]) == (TINY_POLICY, "1")
    if registry.champion_version(client, TINY_POLICY) is None:
        main(["promote", "--version", "1", "--reason", "the demo's policy", "--model", TINY_POLICY])
    assert str(registry.champion_version(client, TINY_POLICY)) == "1"

    # 2. `make demo PROFILE=smoke`: completes in its own registered model
    smoke = fast_smoke()
    assert main(["run", "--profile", "smoke", "--params", _params_file(tmp_path, "s", smoke)]) == 0
    gate = _report(root)["gate"]
    assert gate["model_name"] == SMOKE_POLICY
    assert str(registry.champion_version(client, TINY_POLICY)) == "1"
    assert len(client.search_model_versions(f"name = '{TINY_POLICY}'")) == 1

    # 3. your own base model, competing for the demo's champion
    llama = tiny_llama(tmp_path / "my-llama", tokenizer_texts(root / "data" / "smoke"))
    own = fast_smoke(registry={"model_name": TINY_POLICY})
    own_file = _params_file(tmp_path, "own", own)
    assert main(["run", "--base-model", str(llama), "--params", own_file]) == 0
    gate = _report(root)["gate"]
    # then its gate played the champion from the other tokenizer, on text, and says so
    assert gate["incumbent"] == "champion v1" and gate["note"] is None
    assert gate["evidence"] == "held-out labelers" and gate["prompts"] > 0
    assert 0.0 <= gate["win_rate"]["mean"] <= 1.0 and len(gate["win_rate"]["ci95"]) == 2
    # and each run registered exactly one challenger, the newest holding the alias
    versions = client.search_model_versions(f"name = '{TINY_POLICY}'")
    assert sorted(str(v.version) for v in versions) == ["1", "2"]
    assert str(client.get_model_version_by_alias(TINY_POLICY, "challenger").version) == "2"
    digests = {str(v.version): v.tags["tokenizer_digest"] for v in versions}
    assert digests["1"] != digests["2"]

    # 4. `instructflow evaluate champion challenger`: the two tokenizers side by side
    assert (
        main(
            [
                "evaluate",
                "champion",
                "challenger",
                "--model",
                TINY_POLICY,
                "--profile",
                "smoke",
                "--max-prompts",
                "8",
            ]
        )
        == 0
    )

    # 5. two names for one version (champion is v1): one policy, and said so
    capsys.readouterr()
    evaluate = ["evaluate", "champion", "1", "--model", TINY_POLICY, "--profile", "smoke"]
    assert main([*evaluate, "--max-prompts", "8"]) == 0
    out = capsys.readouterr().out
    assert "v1 (champion, 1): gold" in out and "win rate" not in out
    assert "no head-to-head: champion and 1 name one version" in out
