"""Which stage failures Prefect retries (instructflow.tasks.stage.retry_only_transient)."""

import pytest


class _State:
    def __init__(self, error: Exception | None):
        self.error = error

    def result(self):
        if self.error is not None:
            raise self.error
        return {}


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (IndexError("list index out of range"), False),  # an empty table met by code
        (KeyError("response"), False),
        (ValueError("bad value"), False),
        (OSError("input/output error"), True),
        (ConnectionError("tracking server down"), True),
    ],
)
def test_bad_input_is_never_retried_but_io_trouble_is(error, retried):
    from instructflow.tasks.stage import retry_only_transient

    assert retry_only_transient(None, None, _State(error)) is retried
