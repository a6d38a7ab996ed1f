"""`kill -USR1` on a running `instructflow` prints where every thread is and the command goes on;
a test whose command outlives its timeout fails with those stacks and leaves no process."""

import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import cli_output

# The command's own main(), its handler replaced by one that waits in a function whose name
# the stack must show.
WAITING_COMMAND = """
import argparse, sys, time
from instructflow.flows import cli

def a_handler_waiting_for_something(args):
    print("waiting", flush=True)
    time.sleep(60)
    return 0

cli._parse = lambda parser, argv: argparse.Namespace(
    command="wait", func=a_handler_waiting_for_something)
sys.exit(cli.main([]))
"""


def start_waiting_command() -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", WAITING_COMMAND],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "waiting"
    return proc


def test_sigusr1_prints_every_threads_stack_and_the_command_goes_on():
    proc = start_waiting_command()
    try:
        # when it is sent SIGUSR1
        os.kill(proc.pid, signal.SIGUSR1)
        # then it is still running a second later
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=1)
    finally:
        proc.kill()
    output = proc.communicate()[0]
    # and it printed the stack of the thread that waits
    assert "most recent call first" in output, output
    assert "a_handler_waiting_for_something" in output, output


def test_a_command_past_its_timeout_fails_the_test_with_its_stacks_and_is_killed():
    proc = start_waiting_command()
    # when a test waits for it less long than it runs
    with pytest.raises(pytest.fail.Exception) as failed:
        cli_output(proc, timeout=1)
    # then the test fails naming the timeout, with the waiting stack, and the process is gone
    assert "still running after 1 s" in str(failed.value)
    assert "a_handler_waiting_for_something" in str(failed.value)
    assert proc.poll() is not None
