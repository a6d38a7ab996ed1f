"""The `instructflow` command line. Every subcommand has --help.

instructflow run --profile tiny          run the whole pipeline
instructflow params --example            every run setting, commented (--schema: JSON schema)
instructflow data generate               regenerate data/ and record it in data.dvc
instructflow data verify [DIR]           check data/ (or DIR) against data.dvc (DIR.dvc), file by file
instructflow data add DIR                validate your dataset directory and `dvc add` it
instructflow data validate FILE --kind comparisons
                                         validate one JSONL table (e.g. human comparisons)
instructflow evaluate champion challenger
                                         evaluate registered policies against SFT and each other
instructflow promote --version 3 --reason "..."
                                         move `champion` by hand (an override of the gate)
instructflow best-of-n                   how far the newest RM can lift SFT (no RL): best of n by RM vs by gold
instructflow sweep --seeds 0 1 2         the pipeline once per seed; figures with their spread over seeds
instructflow compare A.json B.json       two reports side by side, saying if machines, inputs or judges differ
"""

import argparse
import faulthandler
import gc
import signal
import sys
from importlib.metadata import version

from instructflow.flows import cli_data, cli_models, cli_run
from instructflow.tasks import heap, served_stack
from instructflow.tasks.env import apply_defaults


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="instructflow",
        description="InstructGPT-style RLHF pipeline on Prefect, MLflow and DVC.",
    )
    parser.add_argument(
        "--version", action="version", version=f"instructflow {version('instructflow')}"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    # One module per group of subcommands, each with its handlers and its arguments.
    for commands in (cli_run, cli_data, cli_models):
        commands.add_commands(sub)
    return parser


SERVICE_COMMANDS = {"run", "sweep", "evaluate", "promote", "best-of-n", "eval"}
"""Commands that talk to MLflow (and Prefect): checked to answer before they start."""
RESUMABLE_COMMANDS = {"run", "sweep"}


def main(argv: list[str] | None = None) -> int:
    # Before anything imports Prefect, which reads its settings once, at import
    # (instructflow.tasks.env: the defaults, each overridden by what you export).
    apply_defaults()
    _dump_stacks_on_sigusr1()
    args = _parse(build_parser(), argv)
    # A command that imports everything and then runs a flow says so (`import_heavy`, beside
    # its handler, which calls heap.imports_done() before its flow: tasks/heap.py).
    if getattr(args, "import_heavy", False):
        heap.imports_begin()
    from instructflow.tasks import outages

    if args.command in SERVICE_COMMANDS:
        # While `make serve` shows this project's stores, its servers, not a second Prefect
        # server on the same database (still before Prefect is imported: it reads its settings once).
        served_stack.use_served_stack()
        # Before the heavy imports below (a command's checks and flow import torch,
        # transformers, MLflow and Prefect: ~50 s on a loaded 2-core machine): a server that
        # is down is reported in seconds, not after MLflow's retries (minutes).
        try:
            outages.bound_mlflow_retries()
            outages.preflight()
        except outages.ServiceUnreachable as error:
            print(f"instructflow: {error}", file=sys.stderr)
            return 3
    from instructflow.flows import explained_errors

    explained_errors.keep_tracebacks_for_bugs()
    try:
        status = args.func(args)
        sys.stdout.flush()  # here, not at exit: a reader gone (`| head`) is seen below
        return status
    except BrokenPipeError as error:
        if _stdout_reader_gone():
            return _stop_writing()
        return _explain(error, resumable=args.command in RESUMABLE_COMMANDS)
    except BaseException as error:
        return _explain(error, resumable=args.command in RESUMABLE_COMMANDS)
    finally:
        gc.enable()  # a command that stopped before its flow (a refusal) never turned it on


def _dump_stacks_on_sigusr1() -> None:
    """`kill -USR1 <pid>` prints every thread's stack to stderr and the command goes on:
    where a run that seems stuck is waiting, without stopping it."""
    # A sys.stderr with no file behind it (pytest's capsys, main() called in-process) has no
    # descriptor for faulthandler to write to: the process's own stderr is written instead.
    for stream in (sys.stderr, sys.__stderr__):
        try:
            faulthandler.register(signal.SIGUSR1, file=stream, all_threads=True)
            return
        except (AttributeError, ValueError, OSError):  # io.UnsupportedOperation: no fileno
            continue


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The arguments; one a subcommand does not take is refused with that subcommand's usage
    (argparse's own shows the top level's list of commands)."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        _chosen(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _chosen(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)subcommand's parser that `args` were parsed by."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            name = getattr(args, action.dest, None)
            if name in action.choices:
                return _chosen(action.choices[name], args)
    return parser


# Exit status of a command whose output's reader went away, as a shell reports one that
# SIGPIPE ended (128 + 13): `instructflow params --example | head` said "lost a service".
READER_GONE = 141


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it: a BrokenPipeError of this
    command's own output, not of a connection to MLflow or Prefect."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll, or stdout is no file
        return False


def _stop_writing() -> int:
    """Send what is left of stdout nowhere (Python's flush at exit would fail again and print
    a traceback), and end quietly, as a command the reader stopped reading ends."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return READER_GONE


def _explain(error: BaseException, resumable: bool = True) -> int:
    """Bad input, a signal, failing storage or a server down or lost: one line and an exit
    status (instructflow.flows.explained_errors); anything else propagates. `resumable`: the
    command keeps finished stages and checkpoints, so running it again resumes."""
    from instructflow.flows.explained_errors import explanation

    explained = explanation(error, resumable)
    if explained is None:
        raise error
    status, line = explained
    print(f"instructflow: {line}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
