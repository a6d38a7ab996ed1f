"""`python -m instructflow` is the `instructflow` command (instructflow.flows.cli:main)."""

import argparse
import subprocess
import sys

from instructflow.flows.cli import build_parser


def subcommands() -> list[str]:
    (action,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return list(action.choices)


def test_python_m_instructflow_lists_every_subcommand(tmp_path):
    # given a working directory outside the checkout (the package as installed is found)
    # when the package is run as a module
    done = subprocess.run(
        [sys.executable, "-m", "instructflow", "--help"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    # then it is the console script's command line: usage, and every subcommand
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: instructflow")
    assert "run" in subcommands() and "data" in subcommands()
    missing = [name for name in subcommands() if name not in done.stdout]
    assert not missing, done.stdout


def test_python_m_instructflow_exits_as_the_command_does(tmp_path):
    # an unknown subcommand: argparse's usage error, exit 2, as `instructflow nonsense`
    done = subprocess.run(
        [sys.executable, "-m", "instructflow", "nonsense"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "invalid choice: 'nonsense'" in done.stderr
