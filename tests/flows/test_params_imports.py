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


def test_a_registry_name_that_is_not_there_is_explained_without_torch():
    # `instructflow evaluate nosuch` looked its versions up light, then took ~7 s of torch
    # and peft imports to explain the refusal (bad input was told apart by importing classes)
    code = (
        "from instructflow.flows.explained_errors import explanation\n"
        "from instructflow.tasks.registry_config import RegistryLookupError\n"
        "assert explanation(RegistryLookupError('no v9')) == (2, 'no v9')\n"
    )
    assert heavy_loaded_by(code) == "[]"


def test_the_bad_input_classes_are_named_by_their_real_paths():
    from instructflow.flows.explained_errors import BAD_INPUT, bad_input_errors, explanation
    from instructflow.models.numeric import NonFiniteError

    classes = bad_input_errors()  # imports each named class: a wrong path fails here
    assert [f"{c.__module__}.{c.__qualname__}" for c in classes] == list(BAD_INPUT)
    diverged = NonFiniteError("policy gradient norm", 1, float("inf"), "ppo", "iteration")
    assert explanation(diverged)[0] == 2
