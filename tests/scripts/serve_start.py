"""scripts/serve.sh's own `start` function, run on its own (tests of how it starts a service)."""

import subprocess
from pathlib import Path

SERVE = Path(__file__).resolve().parents[2] / "scripts" / "serve.sh"


def run_start(state: Path, name: str, *command: str, wait: bool = False) -> None:
    """serve.sh's `start NAME COMMAND...` with STATE=`state`; `wait`: until the started
    command has ended too (a stand-in that prints and exits), else only until it started."""
    script = SERVE.read_text()
    start = script[script.index("start() {") :]
    start = start[: start.index("\n}\n") + 3]
    then = "; wait" if wait else ""
    subprocess.run(
        [
            "bash",
            "-c",
            f'{start}STATE="$1"; shift; start "$@"{then}',
            "-",
            str(state),
            name,
            *command,
        ],
        check=True,
        timeout=30,
    )
