#!/usr/bin/env bash
# The `small` profile on one CUDA GPU: bf16 autocast on SFT, the baselines, the RM and
# PPO; seconds per stage (the report's run.stage_seconds) written to
# bench/results/gpu_small-<UTC time>.json with the device, versions and commit.
#
# UNTESTED ON A GPU: it was written on CPU-only machines (no GPU was at hand), so
# neither its figures nor whether bf16 pays at these sizes have been measured.
# torch.compile is not used yet: no stage has been measured to gain from it.
#
#   bench/gpu_small.sh [extra instructflow run flags, e.g. --seed 1]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this benchmark is for a GPU')"

params=$(mktemp --suffix=.json)
trap 'rm -f "$params"' EXIT
cat > "$params" <<'JSON'
{
  "sft": {"precision": "bf16"},
  "baselines": {"precision": "bf16"},
  "reward_model": {"precision": "bf16"},
  "ppo": {"precision": "bf16"}
}
JSON

"$PY" -m instructflow.flows.cli run --profile small --params "$params" "$@"

mkdir -p bench/results
"$PY" - <<'PY'
import json, subprocess, time
from pathlib import Path

import torch
import transformers

report = json.loads(Path("reports/latest/report.json").read_text())
record = {
    "bench": "gpu_small",
    "when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "device": torch.cuda.get_device_name(0),
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "transformers": transformers.__version__,
    "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
    "run": report["run"],
    "stage_seconds": report["run"].get("stage_seconds"),
}
out = Path("bench/results") / f"gpu_small-{record['when_utc'].replace(':', '')}.json"
out.write_text(json.dumps(record, indent=2))
print(json.dumps(record["stage_seconds"], indent=2))
print(f"wrote {out}")
PY
