"""Browser tests: Playwright for Python driving Debian's Chromium against a live server.

Playwright's own browser download is not used: ``executable_path`` points at /usr/bin/chromium
(``apt-get install chromium``; .ci/run installs it). Without it the tests skip — except under
``CI=true``, where that is a failure. Every page is watched: a console error or an uncaught
exception fails the test that caused it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.database import IN_CI
from tests.helpers.server import LiveServer

CHROMIUM = Path(os.environ.get("TSM_TEST_CHROMIUM", "/usr/bin/chromium"))


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason}; CI requires the browser tests to run")
    pytest.skip(reason)


def _database_first(request: pytest.FixtureRequest) -> None:
    """Playwright's sync API keeps an event loop running in this thread from launch to close, and
    the PostgreSQL fixture calls asyncio.run: so PostgreSQL is set up first (or found missing)."""
    with contextlib.suppress(pytest.skip.Exception):  # no PostgreSQL: those cases skip on their own
        request.getfixturevalue("pg_url")


# Package scope: the event loop Playwright keeps in this thread ends with the browser tests, so
# the suites after them can call asyncio.run again.
@pytest.fixture(scope="package")
def browser(request: pytest.FixtureRequest) -> Iterator[Any]:
    _database_first(request)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        # --no-sandbox: CI containers run as root, where Chromium's sandbox cannot start.
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("browser")
    with LiveServer(f"sqlite+aiosqlite:///{root / 'tsm.sqlite3'}", root / "storage") as live:
        yield live


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


class PageProblems:
    """Console errors and uncaught exceptions a page produced; ``allowed`` lists expected ones."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.allowed: list[str] = []

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(part in e for part in self.allowed)]


def _describe(message: Any) -> str:
    url = (message.location or {}).get("url")
    return f"{message.text} ({url})" if url else message.text


@pytest.fixture
def problems() -> PageProblems:
    return PageProblems()


@pytest.fixture
def page(browser: Any, server: LiveServer, problems: PageProblems) -> Iterator[Any]:
    context = browser.new_context(base_url=server.url)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.on("console", lambda message: message.type == "error" and problems.errors.append(_describe(message)))
    page.on("pageerror", lambda error: problems.errors.append(f"uncaught: {error}"))
    yield page
    context.close()
    assert problems.unexpected() == [], "the page logged errors"
