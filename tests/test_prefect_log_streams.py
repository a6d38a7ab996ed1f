"""Prefect's console log handler writes to the session's stderr, not one test's.

Prefect configures its logging when `prefect.main` is first imported, and its console
handler keeps the sys.stderr of that moment. First imported inside a test that captures
output (capsys), it kept that test's stream, which pytest closes when the test ends:
every later Prefect log line of the process met a closed file, and in a flow with
log_prints=True the logging error's own traceback is printed, so logged, so failed
again, until RecursionError crashed the flow (test_end_to_end's deployment run with bad
human comparisons failed so after test_own_data_refused in one process, and passed
alone). tests/conftest.py imports it first, as it does DVC for the same reason.
"""

import logging


def _prefect_console_handlers() -> list:
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), *map(logging.getLogger, logging.root.manager.loggerDict)]
    found = {
        id(h): h for lg in loggers for h in lg.handlers if isinstance(h, PrefectConsoleHandler)
    }
    return list(found.values())


def test_a_test_that_captures_output_may_be_the_first_to_import_prefect(capsys):
    # given a test that captures its output and imports Prefect (the first to, alone)
    import prefect.main  # noqa: F401

    print("captured")
    assert capsys.readouterr().out == "captured\n"


def test_prefects_console_handlers_still_write_to_an_open_stream():
    # then, the capturing test over, Prefect's console handlers can still write
    handlers = _prefect_console_handlers()
    assert handlers, "prefect.main configures a console handler"
    assert [h.stream for h in handlers if h.stream.closed] == []
