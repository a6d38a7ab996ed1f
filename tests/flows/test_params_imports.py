"""The run settings validate without the heavy libraries: a bad `--params` is refused in
about a second, not after torch, transformers, MLflow and Prefect have loaded (~8 s).

The stage configs live in light modules (tasks/*_config.py, models/lora_options.py,
models/runtime_fields.py, models/lm_size.py) for this; a stage module's import added to
one of them, or to flows/params.py, fails here."""

import subprocess
import sys

HEAVY = ("torch", "transformers", "peft", "accelerate", "mlflow", "prefect", "pandas", "pandera")


def heavy_loaded_by(code: str) -> str:
    """The heavy libraries a fresh interpreter holds after `code` (this process holds all)."""
    code += f"\nimport sys\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_importing_the_params_loads_no_heavy_library():
    assert heavy_loaded_by("import instructflow.flows.params, instructflow.flows.params_io") == "[]"


def test_a_bad_setting_is_explained_without_a_heavy_library():
    code = (
        "from instructflow.flows.explained_errors import explanation\n"
        "from instructflow.flows.params_io import ParamsError, build_params\n"
        "try:\n"
        "    build_params({'ppo': {'lr': -1}})\n"
        "except ParamsError as error:\n"
        "    assert explanation(error) == (2, str(error)), explanation(error)\n"
    )
    assert heavy_loaded_by(code) == "[]"
