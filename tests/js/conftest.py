"""Fixtures of the browser tests: one headless Chromium per test session, and per test a fresh
browser context (an incognito-like profile: empty storage and cache)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext

from tests.js.browser import VIEWPORT, launch


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, shared by the session (fails, never skips, without Chromium)."""
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
