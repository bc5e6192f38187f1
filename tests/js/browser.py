"""Headless Chromium for the browser tests, the tag benchmark and the screenshots: Debian's
Chromium (never a downloaded browser) driven by Playwright's sync API, with a recorder of what a
page sends and logs.

It must not import Tailor code (``sdk``, ``server``, ``model_export``): it is a test tool.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Error,
    Page,
    Request,
    ViewportSize,
    sync_playwright,
)

__all__ = ["FLAGS", "VIEWPORT", "Recorder", "eventually", "find_chromium", "launch", "wait_for"]

#: Chromium's flags (Playwright adds ``--headless``): quiet, no background traffic, and every
#: host name but 127.0.0.1 unresolvable, so that no request of a page leaves the machine.
FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
)

#: The pages' viewport (CSS pixels) unless a caller picks another.
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}


def find_chromium() -> str:
    """Debian's Chromium: ``chromium`` on PATH, else ``/usr/bin/chromium``.

    Raises:
        RuntimeError: It is not installed.
    """
    found = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(found).exists():
        raise RuntimeError(
            "chromium is not installed: run `make test`, which installs it "
            "(.ci/apt-install chromium)"
        )
    return found


@contextmanager
def launch(*, timeout: float = 30.0) -> Iterator[Browser]:
    """Starts Playwright and Debian's Chromium through ``executable_path``, headless with
    :data:`FLAGS`; closes both on the way out.

    Raises:
        RuntimeError: Chromium is not installed.
    """
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")  # never fetch a browser
    executable = find_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=list(FLAGS), headless=True, timeout=timeout * 1000
        )
        try:
            yield browser
        finally:
            browser.close()


class Recorder:
    """Records what one page sends and logs, from its creation on.

    Playwright delivers a page's events while a Playwright call waits, so poll with
    ``page.wait_for_timeout`` (or any other call on the page) before reading these lists.

    Attributes:
        page: The page.
        requests: Every request the page sent, in order (``request.post_data`` is the body).
        console: ``"<type>: <text>"`` per ``console.<type>(...)`` call (``"log: ..."``,
            ``"error: ..."``, ``"debug: ..."``) and ``"exception: <message>"`` per uncaught
            exception, in order.
    """

    def __init__(self, page: Page) -> None:
        self.page = page
        self.requests: list[Request] = []
        self.console: list[str] = []
        page.on("request", self._on_request)
        page.on("console", self._on_console)
        page.on("pageerror", self._on_error)

    def _on_request(self, request: Request) -> None:
        self.requests.append(request)

    def _on_console(self, message: ConsoleMessage) -> None:
        self.console.append(f"{message.type}: {message.text}")

    def _on_error(self, error: Error) -> None:
        self.console.append(f"exception: {error.message}")


def wait_for(page: Page, expression: str, *, timeout: float = 15.0) -> Any:
    """Re-evaluates the JavaScript ``expression`` in ``page`` every 50 ms until it is truthy
    (promises are awaited) and returns its value.

    Each try is one ``page.evaluate``, which a page's Content-Security-Policy does not apply to
    (``page.wait_for_function`` evaluates in the page, where a policy without ``'unsafe-eval'``
    blocks it).

    Raises:
        TimeoutError: Still falsy after ``timeout`` seconds; names the last value.
        playwright.sync_api.Error: The expression threw (it is not retried: guard it, e.g.
            ``a && a.b``).
    """
    probe = f"(async () => {{ const v = await (\n{expression}\n); return [!!v, v]; }})()"
    deadline = time.monotonic() + timeout
    while True:
        ok, value = page.evaluate(probe)
        if ok:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{expression!r} still falsy after {timeout:g} s (last value: {value!r})"
            )
        page.wait_for_timeout(50)


def eventually(
    check: Callable[[], bool],
    what: str,
    *,
    timeout: float = 10.0,
    pause: Callable[[float], None] = time.sleep,
    last: Callable[[], object] | None = None,
) -> None:
    """Polls a Python-side condition every 50 ms until it holds.

    Args:
        check: The condition.
        what: What is awaited, for the error.
        timeout: Seconds to wait.
        pause: Waits the seconds it is given; pass one that runs a page's event loop (e.g.
            ``lambda s: page.wait_for_timeout(s * 1000)``) when ``check`` reads a
            :class:`Recorder`.
        last: What was seen last, for the error.

    Raises:
        TimeoutError: The condition did not hold within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            seen = f" (last seen: {last()!r})" if last is not None else ""
            raise TimeoutError(f"{what} did not happen within {timeout:g} s{seen}")
        pause(0.05)
