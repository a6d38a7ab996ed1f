"""Run by test_fresh_install.py with the interpreter of a fresh venv (python -I): what a user
who ran `pip install instructflow` sees. Prints one JSON object.

argv: the deployment entrypoints of prefect.yaml and prefect.workpools.yaml.

Who changed the environment is found with an audit hook: every os.putenv/os.unsetenv
(what os.environ's writes call) is traced to the first frame outside the standard
library's frozen os/collections modules, so a change made by a dependency's import
(pandera sets SPARK_LOCAL_IP) is told apart from one made by the project's code.
"""

import importlib
import importlib.util
import json
import os
import pkgutil
import sys

writes: list[tuple[str, str]] = []


def audit(event: str, args: tuple) -> None:
    if event not in ("os.putenv", "os.unsetenv"):
        return
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith("<frozen "):
        frame = frame.f_back
    key = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
    writes.append((key, frame.f_code.co_filename if frame else "?"))


sys.addaudithook(audit)
before = dict(os.environ)

# The console script's module: importing it must not import Prefect (the CLI sets
# Prefect's settings first) nor huggingface_hub (which reads HF_HUB_OFFLINE once).
import instructflow.flows.cli  # noqa: E402

heavy_before_main = sorted(m for m in ("prefect", "huggingface_hub", "torch") if m in sys.modules)

modules = []
for package in ("flows", "tasks", "models", "world"):
    top = importlib.import_module(f"instructflow.{package}")
    modules.append(top.__name__)
    for info in pkgutil.walk_packages(top.__path__, prefix=f"instructflow.{package}."):
        importlib.import_module(info.name)
        modules.append(info.name)

after = dict(os.environ)
changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
project_dir = os.path.dirname(os.path.dirname(instructflow.flows.__file__))

from prefect.utilities.importtools import import_object  # noqa: E402

print(
    json.dumps(
        {
            "flows_file": instructflow.flows.__file__,
            "generic_importable": [
                name
                for name in ("flows", "tasks", "models", "world")
                if importlib.util.find_spec(name)
            ],
            "heavy_before_main": heavy_before_main,
            "modules": modules,
            "changed": changed,
            "writes_by_project": sorted({k for k, f in writes if f.startswith(project_dir)}),
            "writes_by_others": sorted({k for k, f in writes if not f.startswith(project_dir)}),
            "writers": sorted({f for _, f in writes}),
            "entrypoints": {e: type(import_object(e)).__name__ for e in sys.argv[1:]},
        }
    )
)
