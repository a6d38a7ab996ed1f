"""The README's commands, as a new user types them into a fresh shell."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
VENV_BIN = Path(sys.executable).parent
ACTIVATE = "source .venv/bin/activate"


def _bash_lines(text: str) -> list[tuple[int, str]]:
    """(character offset, line) of every command line in the README's ```bash blocks."""
    lines = []
    for block in re.finditer(r"```bash\n(.*?)```", text, re.S):
        offset = block.start(1)
        for line in block.group(1).splitlines(keepends=True):
            if line.strip() and not line.lstrip().startswith("#"):
                lines.append((offset, line.strip()))
            offset += len(line)
    return lines


def _only_in_the_venv(word: str) -> bool:
    """A command `make demo` installs in .venv/bin, which a fresh shell does not find."""
    outside = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != VENV_BIN
    )
    return (VENV_BIN / word).is_file() and shutil.which(word, path=outside) is None


def test_a_bare_command_of_the_venv_comes_after_the_readme_says_how_to_reach_it():
    # given the README and the commands in its bash blocks
    text = README.read_text()
    bare = [(at, line) for at, line in _bash_lines(text) if _only_in_the_venv(line.split()[0])]
    assert bare, "the README shows no command of .venv/bin by its bare name"
    # then before the first such command it says how a shell finds them
    first_at, first_line = bare[0]
    assert ACTIVATE in text[:first_at], f"{first_line!r} comes before any {ACTIVATE!r}"


SETTINGS = """
from prefect.settings import get_current_settings
settings = get_current_settings()
print(settings.home, settings.results.local_storage_path, settings.results.persist_by_default)
"""


def test_the_readme_python_snippet_runs_with_the_project_settings(tmp_path):
    # given the README's Python snippet that runs the pipeline, without its two heavy calls
    # (loading a champion, the run itself): its imports and set-up, in their order
    block = next(
        b
        for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
        if "rlhf_pipeline(" in b
    )
    kept = [
        line
        for line in block.splitlines()
        if "load_model(" not in line and "rlhf_pipeline(P" not in line
    ]
    # when it runs in a project root, nothing of Prefect's exported
    (tmp_path / "data.dvc").write_text("outs: []\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "INSTRUCTFLOW_"))}
    done = subprocess.run(
        [sys.executable, "-c", "\n".join(kept) + SETTINGS],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # then the run it starts would use the project's Prefect home and result store, persisted
    home, storage, persist = done.stdout.split()[-3:]
    assert home == str(tmp_path / ".prefect")
    assert storage == str(tmp_path / "runs" / "prefect-results")
    assert persist == "True"
