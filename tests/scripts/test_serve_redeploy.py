"""scripts/serve.sh redeploys only when what the deployments are made of changed.

A redeploy replaces a deployment's schedules with prefect.yaml's: run again after a
reboot, or to restart a service that died, `make serve` deleted a schedule added in the
Prefect UI and switched the paused weekly retrain back on. Here serve.sh's own `deploy`
runs with stand-ins for `prefect` and `instructflow` that record what they were asked.
"""

import subprocess
from pathlib import Path

SERVE = Path(__file__).resolve().parents[2] / "scripts" / "serve.sh"
STUB = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >>"{calls}"
if [[ "$*" == "deployment inspect"* && -f "{missing}" ]]; then exit 1; fi
if [[ "$*" == "params --schema" ]]; then echo '{{"title": "PipelineParams"}}'; fi
exit 0
"""


def _function(script: str, name: str) -> str:
    body = script[script.index(f"{name}() {{") :]
    return body[: body.index("\n}\n") + 3]


def _deploy(tmp_path: Path) -> list[str]:
    """serve.sh's deploy() once; the stand-ins' calls it made."""
    calls, missing = tmp_path / "calls.txt", tmp_path / "missing"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("prefect", "instructflow", "python"):
        (bin_dir / tool).write_text(STUB.format(calls=calls, missing=missing))
        (bin_dir / tool).chmod(0o755)
    for folder in ("code", "state", "prefect-home"):
        (tmp_path / folder).mkdir(exist_ok=True)
    calls.write_text("")
    script = SERVE.read_text()
    functions = _function(script, "deployments_exist") + _function(script, "deploy")
    subprocess.run(
        ["bash", "-c", f"set -euo pipefail\n{functions}deploy", "-"],
        check=True,
        timeout=30,
        env={
            "PATH": "/usr/bin:/bin",
            "BIN": str(bin_dir),
            "CODE_DIR": str(tmp_path / "code"),
            "STATE": str(tmp_path / "state"),
            "PREFECT_HOME": str(tmp_path / "prefect-home"),
        },
    )
    return [c for c in calls.read_text().splitlines() if "deploy --all" in c]


def test_make_serve_again_leaves_deployments_and_their_schedules_alone(tmp_path):
    (tmp_path / "code").mkdir()
    yaml = tmp_path / "code" / "prefect.yaml"
    yaml.write_text("deployments: []\n")
    # given a first make serve, which deploys
    assert _deploy(tmp_path) == ["prefect --no-prompt deploy --all"]
    # when make serve runs again with nothing changed, then nothing is redeployed
    assert _deploy(tmp_path) == []
    # when prefect.yaml changed, then it redeploys (its schedules are the ones wanted now)
    yaml.write_text("deployments: [changed]\n")
    assert _deploy(tmp_path) == ["prefect --no-prompt deploy --all"]
    # when the server lost its deployments (a new database), then it redeploys
    (tmp_path / "missing").touch()
    assert _deploy(tmp_path) == ["prefect --no-prompt deploy --all"]
