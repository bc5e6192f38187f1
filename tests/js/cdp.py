"""A small Chrome DevTools Protocol client for the browser tests: it launches Debian's Chromium
headless, opens pages, navigates, evaluates JavaScript, and records network requests and console
output.

It uses only the standard library and the ``websockets`` sync client, and all traffic stays on
127.0.0.1. It must not import Tailor code (``sdk``, ``server``, ``model_export``): it is a test
tool.

Errors::

    RuntimeError                  Chromium is missing, or did not start.
    └── CDPError                  The browser answered a command with an error, or a navigation
        │                         failed, or the connection to the browser is gone.
        └── JSError               An evaluated expression threw, or its promise was rejected.
    TimeoutError                  A command, a navigation or a ``wait_for`` ran out of time.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

__all__ = ["Browser", "CDPError", "JSError", "Page", "Request"]

#: Chromium's flags: headless, quiet (no background traffic leaves 127.0.0.1), a throwaway profile.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-default-browser-check",
    "--disable-extensions",
    "--remote-debugging-port=0",
)

#: DevToolsActivePort, which Chromium writes into the profile: the port, then the browser's path.
_PORT_FILE = re.compile(r"(\d+)\n(/devtools/browser/[0-9a-f-]{36})")

EventHandler = Callable[[str, dict[str, Any]], None]
Reply = Callable[[dict[str, Any]], None]
#: The answer a command gets when the connection closes before the browser answered it.
_CLOSED: dict[str, Any] = {
    "error": {"message": "the connection to the browser closed before it answered"}
}


class CDPError(RuntimeError):
    """Raised when the browser answers a command with an error (or the connection is gone).

    Attributes:
        method: The protocol method, e.g. ``"Page.navigate"``.
        message: What the browser said.
    """

    def __init__(self, method: str, message: str) -> None:
        super().__init__(f"{method}: {message}")
        self.method = method
        self.message = message


class JSError(CDPError):
    """Raised when an evaluated expression throws or its promise is rejected; ``message`` holds the
    exception's description (``"Error: x\\n    at ..."``)."""


@dataclass(frozen=True, kw_only=True)
class Request:
    """One network request a page sent, as ``Network.requestWillBeSent`` reported it.

    Attributes:
        url: The full URL.
        method: ``"GET"``, ``"POST"``, ...
        type: Chromium's resource type: ``"Document"``, ``"Script"``, ``"Fetch"``, ``"Ping"``
            (``navigator.sendBeacon``), ...
        post_data: The request body as text, or None when there is none (or it could not be read).
        headers: The request headers Chromium reported (not the cookies it adds later).
    """

    url: str
    method: str
    type: str
    post_data: str | None
    headers: dict[str, str]


class _Connection:
    """One websocket to the browser: sends commands and, on a reader thread, routes responses to
    their callers (by message id) and events to handlers (by session id, "" for the browser)."""

    def __init__(self, url: str, *, timeout: float) -> None:
        # connect() used as a context manager (websockets 17.1+ deprecates the bare call); the
        # stack exits it in close().
        self._stack = contextlib.ExitStack()
        self._ws: ClientConnection = self._stack.enter_context(
            connect(
                url,
                max_size=None,
                proxy=None,
                compression=None,
                open_timeout=timeout,
                ping_interval=None,
                close_timeout=2,
            )
        )
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # guards _pending, _handlers and the closed flag
        self._send_lock = threading.Lock()
        self._pending: dict[int, Reply] = {}
        self._handlers: dict[str, EventHandler] = {}
        self.closed = threading.Event()
        self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
        self._reader.start()

    def on(self, session_id: str, handler: EventHandler | None) -> None:
        """Routes the events of ``session_id`` to ``handler`` (None: drop them). When the
        connection closes, the handler is called once with ``("", {})`` so waiters can give up."""
        with self._lock:
            if handler is None:
                self._handlers.pop(session_id, None)
            else:
                self._handlers[session_id] = handler

    def post(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session_id: str | None = None,
        reply: Reply,
    ) -> int:
        """Sends one command without waiting and returns its message id.

        ``reply`` gets the answer message (with ``"result"`` or ``"error"``) on the reader thread,
        or a made-up ``"error"`` if the connection closes first; it must not block.
        """
        msg_id = next(self._ids)
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session_id:
            message["sessionId"] = session_id
        with self._lock:
            is_open = not self.closed.is_set()
            if is_open:
                self._pending[msg_id] = reply
        if not is_open:
            reply(_CLOSED)
            return msg_id
        try:
            with self._send_lock:
                self._ws.send(json.dumps(message))
        except (ConnectionClosed, OSError):
            if self.forget(msg_id):
                reply(_CLOSED)
        return msg_id

    def forget(self, msg_id: int) -> bool:
        """Drops the reply callback of ``msg_id``; True if it was still waiting."""
        with self._lock:
            return self._pending.pop(msg_id, None) is not None

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session_id: str | None = None,
        timeout: float = 20.0,
    ) -> dict[str, Any]:
        """Sends one command and waits for its result.

        Raises:
            CDPError: The browser answered with an error, or the connection is closed.
            TimeoutError: No answer within ``timeout`` seconds.
        """
        done = threading.Event()
        box: list[dict[str, Any]] = []

        def reply(answer: dict[str, Any]) -> None:
            box.append(answer)
            done.set()

        msg_id = self.post(method, params, session_id=session_id, reply=reply)
        if not done.wait(timeout) and self.forget(msg_id):
            raise TimeoutError(f"CDP {method} got no answer within {timeout:g} s")
        done.wait()  # answered just as the wait ran out
        return _result(method, box[0])

    def close(self) -> None:
        """Closes the socket and waits for the reader thread to end."""
        with contextlib.suppress(Exception):
            self._stack.close()
        self._reader.join(timeout=5)

    def _read(self) -> None:
        try:
            for raw in self._ws:
                message = json.loads(raw)
                if "id" in message:
                    with self._lock:
                        reply = self._pending.pop(message["id"], None)
                    if reply is not None:
                        reply(message)
                elif "method" in message:
                    with self._lock:
                        handler = self._handlers.get(message.get("sessionId", ""))
                    if handler is not None:
                        handler(message["method"], message.get("params", {}))
        except (ConnectionClosed, OSError):
            pass
        finally:
            with self._lock:
                self.closed.set()
                replies = list(self._pending.values())
                self._pending.clear()
                handlers = list(self._handlers.values())
            for reply in replies:
                reply(_CLOSED)
            for handler in handlers:
                handler("", {})


def _result(method: str, answer: dict[str, Any]) -> dict[str, Any]:
    """The ``result`` of an answer message; raises CDPError for an ``error`` answer."""
    if "error" in answer:
        error = answer["error"]
        text = error.get("message", "unknown error")
        if error.get("data"):
            text = f"{text} ({error['data']})"
        raise CDPError(method, text)
    result: dict[str, Any] = answer.get("result", {})
    return result


def _find_chromium(chromium: str | None) -> str:
    found = chromium or shutil.which("chromium")
    if found is None and Path("/usr/bin/chromium").exists():
        found = "/usr/bin/chromium"
    if found is None or not Path(found).exists():
        raise RuntimeError(
            f"chromium is not installed ({chromium or 'not on PATH'}): "
            "run `make test`, which installs it (.ci/apt-install chromium)"
        )
    return found


class Browser:
    """A headless Chromium in its own process group with a throwaway profile, driven over CDP.

    Use it as a context manager; ``close()`` kills the browser and removes the profile.

    Args:
        chromium: The executable; default ``shutil.which("chromium")``, then ``/usr/bin/chromium``.
        timeout: Seconds to wait for the browser to start, and for each browser-level command.

    Raises:
        RuntimeError: Chromium is missing, or did not open its DevTools port in time.
    """

    def __init__(self, *, chromium: str | None = None, timeout: float = 20.0) -> None:
        executable = _find_chromium(chromium)
        self.timeout = timeout
        self._pages: list[Page] = []
        self._tmp = Path(tempfile.mkdtemp(prefix="tailor-cdp-"))
        profile = self._tmp / "profile"
        profile.mkdir()
        self._stderr_path = self._tmp / "chromium.stderr"
        self._conn: _Connection | None = None
        try:
            with self._stderr_path.open("wb") as stderr:
                self._proc = subprocess.Popen(
                    [executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    start_new_session=True,  # close() kills the whole group
                )
        except OSError as exc:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise RuntimeError(f"cannot start {executable}: {exc}") from exc
        try:
            port, path = self._wait_for_port(profile / "DevToolsActivePort", timeout)
            self._conn = _Connection(f"ws://127.0.0.1:{port}{path}", timeout=timeout)
        except BaseException:
            self.close()
            raise

    def _wait_for_port(self, port_file: Path, timeout: float) -> tuple[int, str]:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                # Written in place, so it can be read half-written: match all of it.
                found = _PORT_FILE.fullmatch(port_file.read_text().strip())
                if found:
                    return int(found[1]), found[2]
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"chromium exited with code {self._proc.returncode} before opening its "
                    f"DevTools port; stderr ends with:\n{self._stderr_tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"chromium did not write {port_file.name} within {timeout:g} s; "
                    f"stderr ends with:\n{self._stderr_tail()}"
                )
            time.sleep(0.02)

    def _stderr_tail(self, lines: int = 20) -> str:
        try:
            text = self._stderr_path.read_text(errors="replace")
        except OSError:
            return "(no stderr)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty)"

    def _connection(self) -> _Connection:
        if self._conn is None or self._conn.closed.is_set():
            raise CDPError("Browser", "the browser is closed")
        return self._conn

    def new_page(self, *, width: int = 1280, height: int = 900) -> Page:
        """Opens a new page on ``about:blank``, in a window of its own so it stays visible, with a
        ``width`` x ``height`` CSS-pixel viewport and the Page, Runtime and Network domains
        enabled, so requests and console output are recorded from the first navigation on."""
        conn = self._connection()
        # Each page gets its own window: a second tab in the same window would hide the first
        # (document.visibilityState "hidden", a visibilitychange, timers throttled to 1 s).
        target = conn.send(
            "Target.createTarget", {"url": "about:blank", "newWindow": True}, timeout=self.timeout
        )
        target_id: str = target["targetId"]
        attached = conn.send(
            "Target.attachToTarget", {"targetId": target_id, "flatten": True}, timeout=self.timeout
        )
        page = Page(conn, target_id, attached["sessionId"], timeout=self.timeout)
        self._pages.append(page)
        try:
            page._setup(width, height)
        except BaseException:
            page.close()
            raise
        return page

    def close(self) -> None:
        """Closes the pages and the browser, kills the browser's process group and removes the
        profile. Safe to call twice, and does not hang if Chromium already died."""
        for page in self._pages:
            with contextlib.suppress(CDPError, TimeoutError):
                page.close()
        self._pages.clear()
        if self._conn is not None:
            if not self._conn.closed.is_set():
                with contextlib.suppress(CDPError, TimeoutError):
                    self._conn.send("Browser.close", timeout=5)
            self._conn.close()
        if self._proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Page:
    """One page (a window of its own), attached with its own CDP session. Made by
    ``Browser.new_page()``.

    Its events (lifecycle, network, console) are recorded on the connection's reader thread;
    the methods read those records under a lock.
    """

    def __init__(
        self, conn: _Connection, target_id: str, session_id: str, *, timeout: float
    ) -> None:
        self._conn = conn
        self.target_id = target_id
        self.session_id = session_id
        self.timeout = timeout
        self._cond = threading.Condition()
        self._lifecycle: list[tuple[str, str, str]] = []  # (frameId, loaderId, name)
        self._requests: list[dict[str, Any]] = []  # requestWillBeSent params
        self._post_data: dict[int, str] = {}  # index in _requests -> body fetched separately
        self._fetching: set[int] = set()  # indexes whose body is being fetched
        self._console: list[str] = []
        self._crashes = 0  # renderer crashes so far (a later navigation starts a new one)
        self._disconnected = False  # the connection to the browser is gone
        self._closed = False
        conn.on(session_id, self._on_event)

    def _setup(self, width: int, height: int) -> None:
        for method in ("Inspector.enable", "Page.enable", "Runtime.enable", "Network.enable"):
            self._send(method)
        self._send("Page.setLifecycleEventsEnabled", {"enabled": True})
        self._send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def send(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Send any DevTools command on this page's session and return its result (for what the
        helpers above do not cover: network emulation, input events, window bounds).

        Raises:
            CDPError: the browser answered with an error.
            TimeoutError: no answer within ``timeout`` seconds.
        """
        return self._send(method, params, timeout=timeout)

    def _send(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        return self._conn.send(
            method,
            params,
            session_id=self.session_id,
            timeout=self.timeout if timeout is None else timeout,
        )

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Network.requestWillBeSent":
            self._on_request(params)
            return
        with self._cond:
            if method == "Page.lifecycleEvent":
                self._lifecycle.append(
                    (params.get("frameId", ""), params.get("loaderId", ""), params.get("name", ""))
                )
            elif method == "Runtime.consoleAPICalled":
                args = " ".join(_describe(arg) for arg in params.get("args", []))
                self._console.append(f"{params.get('type', 'log')}: {args}")
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                text = details.get("text", "")
                description = details.get("exception", {}).get("description", "")
                self._console.append(f"exception: {' '.join(p for p in (text, description) if p)}")
            elif method == "Inspector.targetCrashed":
                self._crashes += 1
            elif method == "":
                self._disconnected = True
            else:
                return
            self._cond.notify_all()

    def add_init_script(self, source: str) -> None:
        """Runs ``source`` in every later document of this page, before any of the page's own
        scripts (``Page.addScriptToEvaluateOnNewDocument``). The current document is untouched."""
        self._send("Page.addScriptToEvaluateOnNewDocument", {"source": source})

    def goto(self, url: str, *, wait: str = "load", timeout: float = 20.0) -> None:
        """Navigates to ``url`` and waits until the main frame's new document fires ``load``
        (``wait="load"``) or ``DOMContentLoaded`` (``wait="domcontentloaded"``).

        Lifecycle events are recorded from before ``Page.navigate`` is sent, and only those of a
        document the frame did not have before count, so a late event of the previous document
        cannot end the wait early. That new document is the one ``Page.navigate`` started (its
        loader id) or, when the page redirects itself before loading (``location.href = ...``),
        the one it went on to. A same-document navigation (only the fragment changes) returns
        at once.

        Raises:
            ValueError: ``wait`` is neither ``"load"`` nor ``"domcontentloaded"``.
            CDPError: The navigation failed (``errorText``, e.g. ``net::ERR_CONNECTION_REFUSED``),
                or the page crashed or the browser went away meanwhile.
            TimeoutError: The event did not come within ``timeout`` seconds.
        """
        names = {"load": "load", "domcontentloaded": "DOMContentLoaded"}
        if wait not in names:
            raise ValueError(f"wait must be 'load' or 'domcontentloaded', not {wait!r}")
        name = names[wait]
        deadline = time.monotonic() + timeout
        with self._cond:
            start = len(self._lifecycle)  # only events from here on count...
            old = {loader for _, loader, _ in self._lifecycle}  # ...and not of these documents
            crashes = self._crashes
        result = self._send("Page.navigate", {"url": url}, timeout=timeout)
        if result.get("errorText"):
            raise CDPError("Page.navigate", f"{url}: {result['errorText']}")
        if not result.get("loaderId"):
            return
        frame_id = result["frameId"]

        def arrived() -> bool:
            return any(
                event == (frame_id, event[1], name) and event[1] not in old
                for event in self._lifecycle[start:]
            )

        with self._cond:
            while not arrived():
                if self._crashes != crashes:
                    raise CDPError("Page.navigate", f"{url}: the page crashed")
                if self._disconnected:
                    raise CDPError("Page.navigate", f"{url}: the connection to the browser closed")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{url} did not fire {name} within {timeout:g} s")
                self._cond.wait(left)

    def evaluate(self, expression: str, *, timeout: float = 20.0) -> Any:
        """Evaluates ``expression`` in the page and returns its value as JSON-like Python
        (``undefined`` is None; ``NaN``, ``Infinity`` and ``-0`` are floats, a BigInt an int).
        A promise is awaited first. DOM nodes and functions come back as ``{}``.

        Raises:
            JSError: The expression threw or the promise was rejected.
            CDPError: The value cannot be returned by value, or the page is gone.
            TimeoutError: No result within ``timeout`` seconds.
        """
        answer = self._send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            timeout=timeout,
        )
        details = answer.get("exceptionDetails")
        if details is not None:
            exception = details.get("exception")
            if exception:
                message = exception.get("description") or _describe(exception)
            else:
                message = details.get("text", "exception")
            raise JSError("Runtime.evaluate", message)
        result = answer.get("result", {})
        if "unserializableValue" in result:
            return _unserializable(result["unserializableValue"])
        return result.get("value")

    def wait_for(self, expression: str, *, timeout: float = 15.0, interval: float = 0.05) -> Any:
        """Re-evaluates the JavaScript expression ``expression`` every ``interval`` seconds until it
        is truthy (in JavaScript's sense; promises are awaited) and returns its value.

        Raises:
            JSError: The expression threw (it is not retried: guard it, e.g. ``a && a.b``).
            TimeoutError: Still falsy after ``timeout`` seconds; names the last value.
        """
        probe = f"(async () => {{ const v = await (\n{expression}\n); return [!!v, v]; }})()"
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ok, value = self.evaluate(probe, timeout=max(left, 1.0))
            if ok:
                return value
            if time.monotonic() + interval > deadline:
                raise TimeoutError(
                    f"{expression!r} still falsy after {timeout:g} s (last value: {value!r})"
                )
            time.sleep(interval)

    def screenshot(self, path: Path) -> None:
        """Writes a PNG of the viewport to ``path``."""
        answer = self._send(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False}
        )
        Path(path).write_bytes(base64.b64decode(answer["data"]))

    def _on_request(self, params: dict[str, Any]) -> None:
        """Records a request; a body the event lacks is asked for at once, because Chromium
        forgets the request once its document is replaced ("No resource with given id")."""
        request = params["request"]
        fetch = request.get("hasPostData") and _inline_post_data(request) is None
        with self._cond:
            index = len(self._requests)
            self._requests.append(params)
            if fetch:
                self._fetching.add(index)
            self._cond.notify_all()
        if fetch:
            self._conn.post(
                "Network.getRequestPostData",
                {"requestId": params["requestId"]},
                session_id=self.session_id,
                reply=lambda answer: self._on_post_data(index, answer),
            )

    def _on_post_data(self, index: int, answer: dict[str, Any]) -> None:
        with self._cond:
            self._fetching.discard(index)
            if "result" in answer:
                self._post_data[index] = _decode_post_data(answer["result"])
            self._cond.notify_all()

    def requests(self) -> list[Request]:
        """Every request the page sent so far, in order (a redirect appears once per hop).

        A body that Chromium did not put in ``Network.requestWillBeSent`` (a ``sendBeacon`` Blob,
        for one) comes from ``Network.getRequestPostData``: asked for when the event arrived, and
        asked again here if that failed; if Chromium no longer has it, ``post_data`` is None.
        """
        with self._cond:
            self._cond.wait_for(lambda: not self._fetching, timeout=self.timeout)
            events = list(self._requests)
            fetched = dict(self._post_data)
        out = []
        for index, event in enumerate(events):
            request = event["request"]
            post_data = _inline_post_data(request)
            if post_data is None and request.get("hasPostData"):
                post_data = fetched.get(index)
                if post_data is None:
                    post_data = self._fetch_post_data(index, event["requestId"])
            out.append(
                Request(
                    url=request["url"],
                    method=request["method"],
                    type=event.get("type", "Other"),
                    post_data=post_data,
                    headers=dict(request.get("headers", {})),
                )
            )
        return out

    def _fetch_post_data(self, index: int, request_id: str) -> str | None:
        try:
            answer = self._send("Network.getRequestPostData", {"requestId": request_id})
        except CDPError:
            return None  # Chromium no longer has it (or the page is gone)
        body = _decode_post_data(answer)
        with self._cond:
            self._post_data[index] = body
        return body

    def console(self) -> list[str]:
        """Console messages and uncaught exceptions so far, in order: ``"<type>: <args>"`` for
        ``console.<type>(...)`` (``"log: ..."``, ``"error: ..."``, ``"warning: ..."``) and
        ``"exception: Uncaught Error: ..."`` for an uncaught exception."""
        with self._cond:
            return list(self._console)

    def close(self) -> None:
        """Closes the page and its window. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self._conn.closed.is_set():
                self._conn.send("Target.closeTarget", {"targetId": self.target_id}, timeout=5)
        finally:
            self._conn.on(self.session_id, None)


def _describe(obj: dict[str, Any]) -> str:
    """A console argument (a ``Runtime.RemoteObject``) as text."""
    if "value" in obj:
        value = obj["value"]
        return value if isinstance(value, str) else json.dumps(value)
    if "unserializableValue" in obj:
        return str(obj["unserializableValue"])
    return str(obj.get("description", obj.get("type", "")))


def _unserializable(text: str) -> float | int:
    """A value JSON cannot carry (``Runtime.UnserializableValue``) as Python."""
    if text.endswith("n"):
        return int(text[:-1])  # BigInt
    return float(text.replace("Infinity", "inf"))  # NaN, Infinity, -Infinity, -0


def _decode_post_data(answer: dict[str, Any]) -> str:
    """The body in a ``Network.getRequestPostData`` result, as text."""
    body = str(answer.get("postData", ""))
    if answer.get("base64Encoded"):
        return base64.b64decode(body).decode("utf-8", errors="replace")
    return body


def _inline_post_data(request: dict[str, Any]) -> str | None:
    """The body carried in the event itself: ``postData``, else the ``postDataEntries``."""
    if "postData" in request:
        return str(request["postData"])
    entries = request.get("postDataEntries")
    if entries and all("bytes" in entry for entry in entries):
        raw = b"".join(base64.b64decode(entry["bytes"]) for entry in entries)
        return raw.decode("utf-8", errors="replace")
    return None
