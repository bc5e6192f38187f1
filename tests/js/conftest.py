"""Fixtures of the browser tests: one headless Chromium for the tests of this package, and per
test a fresh browser context (an incognito-like profile: empty storage and cache).

The browser is package-scoped, not session-scoped: Playwright's sync API keeps an event loop
running in the main thread while it is open, and ``asyncio.run`` in any later test would fail."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext

from tests.js.browser import VIEWPORT, launch


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, shared by this package's tests (fails, never skips, without it)."""
    with launch() as b:
        yield b


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh profile of this test's own."""
    ctx = browser.new_context(viewport=VIEWPORT)
    ctx.set_default_timeout(20_000)
    try:
        yield ctx
    finally:
        ctx.close()
