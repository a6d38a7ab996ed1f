"""A real browser for the UI tests: Playwright driving Debian's Chromium.

Never a browser download: Playwright launches the system's Chromium
(`apt-get install chromium`; .ci/run installs it when missing) through
`executable_path`. Without it the browser tests are skipped, except in CI
(.ci/run sets INSTRUCTFLOW_REQUIRE_BROWSER=1), where a missing browser is a failure.

Screenshots go to a temporary folder, or to INSTRUCTFLOW_SCREENSHOTS when set
(`make screenshots` sets it to docs/screenshots/, the pictures the README shows).
"""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

# The system's Chromium only: Playwright never fetches a browser of its own here.
os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
VIEWPORT = {"width": 1400, "height": 900}
# --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start. The rest keep
# a machine without network quiet: no GPU, no QUIC, no background fetches or updates.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    configured = os.environ.get("INSTRUCTFLOW_CHROMIUM")
    if configured:
        return configured
    return next(filter(None, (shutil.which(name) for name in CHROMIUM_NAMES)), None)


# Package scope, not session: Playwright's sync API keeps an event loop running in the
# main thread until it stops, and Prefect's sync calls in later tests (tests/flows) then
# return coroutines ("'coroutine' object is not subscriptable", seen in CI).
@pytest.fixture(scope="package")
def chromium() -> Iterator:
    """One headless Chromium for the browser tests, stopped after the last of them."""
    executable = chromium_path()
    if executable is None:
        message = "no Chromium on PATH: apt-get install chromium (or set INSTRUCTFLOW_CHROMIUM)"
        if os.environ.get("INSTRUCTFLOW_REQUIRE_BROWSER") or os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    sync_api = pytest.importorskip("playwright.sync_api")
    # `expect` assertions wait 60 s as actions do (pages' default), not Playwright's 5 s: a
    # loaded machine exceeded 5 s while the MLflow UI drew a run's page (its heading failed so)
    sync_api.expect.set_options(timeout=60_000)
    with sync_api.sync_playwright() as playwright:
        # Playwright adds --headless and a fresh, empty --user-data-dir itself.
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_FLAGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(chromium) -> Iterator:
    """A fresh page (own cookies and storage) per test, with a 60 s default wait."""
    context = chromium.new_context(viewport=VIEWPORT, locale="en-US", timezone_id="UTC")
    context.set_default_timeout(60_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the tests save their screenshots to."""
    configured = os.environ.get("INSTRUCTFLOW_SCREENSHOTS")
    folder = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
