"""Time to decision of the browser tag, in real headless Chromium against a real server.

``python -m benchmarks.tag [--bundle DIR] [--loads N] [--out FILE] [--quick]`` starts, all on
127.0.0.1:

* the decision server as it ships (``python -m server``, one worker, demo mode off, rate limits
  off, a temporary event log), with a public key allowed for the page's origin and a secret key;
* a page server (stdlib) on another port: a store page with one ``data-tailor-slot`` element per
  slot of the bundle, and the tag in ``<head>`` exactly as ``js_snippet/README.md`` says
  (``async``, ``data-key``, ``data-endpoint``): the page, the tag and the API are cross-origin,
  as on a customer's site;
* Debian's Chromium, headless, driven by Playwright through ``tests.js.browser`` (its flags turn
  off background networking and leave every host name but 127.0.0.1 unresolvable).

Each of the N loads opens a new browser context (an incognito-like profile: empty HTTP cache,
empty ``localStorage``, no open connections), so it is a visitor's first page view; in the same
context a second page view of the same page follows (``repeat view``: the tag comes from the
HTTP cache, the visitor and session are the same, so the server may answer from its visit cache).
Every time is read from the page's own clock (``performance.now()``, origin = navigation start):

* ``decide_sent``: the decide request's Resource Timing ``startTime`` (the tag called ``fetch``);
* ``decide_network``: its Resource Timing ``duration`` (fetch to the last byte of the answer);
* ``slots_filled``: every slot carries ``data-tailor-variant`` (the tag sets it on a slot it
  filled), seen by a ``MutationObserver`` installed before any script of the page;
* ``next_frame``: the first animation frame after that (the frame that paints the content);
* the timeline around them: ``document_parsed`` (``DOMContentLoaded``: the tag's first decision
  waits for it), ``tag_loaded`` (the tag script's ``responseEnd``), ``tag_started`` (the tag hid
  the slots: ``data-tailor-pending`` added to ``<html>``), ``decide_answered`` (the decide
  answer's ``responseEnd``);
* ``tag_time_to_decision`` / ``tag_slots_hidden``: what the tag itself reports in its
  ``pageview`` event (``timeToDecisionMs``, ``slotsHiddenMs``), i.e. what the server's
  ``tailor_tag_*`` histograms receive; read from the beacon the tag sends on ``pagehide``
  (dispatched once the page's clock has been read, so that the browser still reports the body);
* ``server``: the decide answer's ``Server-Timing`` total (the server's own time), as the
  browser received it.

Sizes (the tag's bytes on the wire and decoded, the decide request and answer) and whether the
tag came from the HTTP cache (nothing on the wire) come from the browser's network records
(Playwright's requests and responses), because the server sends no ``Timing-Allow-Origin``:
cross-origin Resource Timing entries have no sizes and no phases. ``--warmup`` loads (not
reported) come first. Per measure the report gives n, median and p95 (nearest rank), min, max
and mean in ms, with the machine (:func:`benchmarks.run.machine`), writes JSON to ``--out``
(default ``benchmarks/results/tag.json``; ``--quick`` writes nothing unless ``--out`` is given)
and prints a Markdown table.

Time-bounded: ``--deadline`` seconds for the whole run (loads not started by then are skipped
and the report says so), every browser command has a timeout, and an alarm backs them up. The
browser and the server (its whole process group) are killed on the way out, also on Ctrl-C and
SIGTERM.

May import everything (benchmarks are not shipped).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import html
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import httpx
from playwright.sync_api import Browser, Request
from playwright.sync_api import Error as PlaywrightError
from prometheus_client.parser import text_string_to_metric_families

from benchmarks._load import DEFAULT_BUNDLE, PUBLIC_KEY, ROOT, Server, serve
from tests.js.browser import VIEWPORT, Recorder, launch

REPORT_VERSION = 1
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "tag.json"
TAG_PATH = "/tag/v1/tailor.js"
SERIES = ("first_visit", "repeat_view")

#: Every measure of a page view (ms from navigation start unless said otherwise).
MEASURES = {
    "decide_sent": "navigation start to the decide request sent (Resource Timing startTime)",
    "decide_network": "the decide request's network time (Resource Timing duration)",
    "slots_filled": "navigation start to every slot filled (data-tailor-variant set)",
    "document_parsed": "navigation start to DOMContentLoaded (the tag decides after it)",
    "tag_loaded": "navigation start to the tag script received (Resource Timing responseEnd)",
    "tag_started": "navigation start to the tag running (it hides the slots)",
    "decide_answered": "navigation start to the decide answer received (responseEnd)",
    "next_frame": "navigation start to the first animation frame after the fill",
    "tag_time_to_decision": "the tag's own timeToDecisionMs (what the server's histogram gets)",
    "tag_slots_hidden": "the tag's own slotsHiddenMs, from the tag's start (ditto)",
    "server": "the server's own time for the decide (Server-Timing total)",
}
#: Measures the table shows, in order: the three asked for, then the timeline of a view.
TABLE = (
    "decide_sent",
    "decide_network",
    "slots_filled",
    "document_parsed",
    "tag_loaded",
    "tag_started",
    "decide_answered",
    "next_frame",
    "tag_time_to_decision",
    "server",
)

#: Runs before any script of every document: notes when the tag hides the slots and when every
#: slot is filled, then resolves ``__tailorBench.done`` at the next animation frame.
RECORDER = """
(() => {
  const b = (window.__tailorBench = {});
  const attrs = ["data-tailor-pending", "data-tailor-variant"];
  let done;
  b.done = new Promise((resolve) => (done = resolve));
  new MutationObserver((records) => {
    const now = performance.now();
    const html = document.documentElement;
    // The tag hides the slots as it starts; it may unhide <html> in the same task.
    if (b.started == null && records.some((r) => r.target === html && r.oldValue === null)) {
      b.started = now;
    }
    const slots = [...document.querySelectorAll("[data-tailor-slot]")];
    if (b.filled == null && slots.length && slots.every((el) => el.hasAttribute(attrs[1]))) {
      b.filled = now;
      requestAnimationFrame(() => {
        b.frame = performance.now();
        done(true);
      });
    }
  }).observe(document, {
    attributes: true, attributeOldValue: true, subtree: true, attributeFilter: attrs,
  });
})();
"""

#: Waits (in the page) until every slot is filled and painted, or for the given ms (``@MS@``).
WAIT_JS = """Promise.race([
  window.__tailorBench.done,
  new Promise((resolve) => setTimeout(() => resolve(false), @MS@)),
])"""

#: What the page measured: the recorder's marks, navigation and resource timing, the slots.
COLLECT_JS = """
(() => {
  const b = window.__tailorBench || {};
  const nav = performance.getEntriesByType("navigation")[0];
  const resources = performance.getEntriesByType("resource");
  const pick = (part) => {
    const e = resources.find((r) => r.name.includes(part));
    return e ? { start: e.startTime, end: e.responseEnd, duration: e.duration } : null;
  };
  return {
    started: b.started ?? null,
    filled: b.filled ?? null,
    frame: b.frame ?? null,
    document: nav ? {
      responseEnd: nav.responseEnd,
      domContentLoaded: nav.domContentLoadedEventStart,
      load: nav.loadEventStart,
    } : null,
    tag: pick("@TAG_PATH@"),
    decide: pick("/v1/decide"),
    variants: Object.fromEntries([...document.querySelectorAll("[data-tailor-slot]")]
      .map((el) => [el.dataset.tailorSlot, el.dataset.tailorVariant ?? null])),
  };
})()
""".replace("@TAG_PATH@", TAG_PATH)

#: Makes the tag send its queued events (the pageview with its timings) now, as it does on
#: ``pagehide``: a beacon sent while the document is alive, so the browser reports its body.
FLUSH_JS = "window.dispatchEvent(new PageTransitionEvent('pagehide')), true"


class DeadlineExceeded(Exception):
    """Raised by the backstop alarm when the run outlives its deadline by a wide margin."""


# -- the page ---------------------------------------------------------------------------------


def slots_of(bundle: Path) -> list[tuple[str, str]]:
    """(slot id, default text) of every slot in the bundle's manifest, in order."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    out = []
    for slot in manifest["slots"]:
        default = next((v for v in slot["variants"] if v["id"] == slot.get("default")), None)
        content = (default or {}).get("content") or {}
        text = content.get("text") if content.get("type") in ("text", "link") else None
        out.append((slot["id"], text or f"Default {slot['id']}"))
    return out


def page_html(slots: Sequence[tuple[str, str]], server_url: str, timeout_ms: int | None) -> str:
    """A small store page: the tag in ``<head>`` as the README says, one element per slot.

    The page declares consent granted (a visitor who accepted the banner): the tag sends its
    own timings in an event, and events wait while consent is pending."""
    timeout = f' data-timeout="{timeout_ms}"' if timeout_ms is not None else ""
    tag = (
        f'<script async src="{server_url}{TAG_PATH}" data-key="{PUBLIC_KEY}" '
        f'data-endpoint="{server_url}" data-consent="granted"{timeout}></script>'
    )
    products = "\n".join(
        f'<li class="product"><span data-tailor-category="{cat}">{cat}</span> '
        f"<strong>Product {i}</strong> <em>{19 + 10 * i} EUR</em></li>"
        for i, cat in enumerate(["electronics", "audio", "home", "outdoor"] * 3)
    )
    sections = "\n".join(
        f'<section class="slot" data-tailor-slot="{html.escape(sid)}">'
        f"<p>{html.escape(text)}</p></section>"
        for sid, text in slots
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Benchmark store</title>
<link rel="icon" href="data:,">
<script>window.tailor = window.tailor || [];</script>
{tag}
<style>
  body {{ font-family: system-ui, sans-serif; margin: 0 auto; max-width: 960px; padding: 0 16px; }}
  .slot {{ border: 1px solid #ccd; border-radius: 8px; padding: 12px 16px; margin: 12px 0; }}
  .products {{ display: grid; grid-template-columns: repeat(4, 1fr); gap: 12px; padding: 0; }}
  .product {{ list-style: none; border: 1px solid #eee; padding: 8px; }}
</style>
</head>
<body>
<header><h1>Benchmark store</h1><nav>Electronics · Audio · Home · Outdoor</nav></header>
<main>
{sections}
<h2>Popular now</h2>
<ul class="products">
{products}
</ul>
</main>
<footer>Every request of this page goes to 127.0.0.1.</footer>
</body>
</html>
"""


class PageServer:
    """The site embedding the tag: serves the page on 127.0.0.1 in a thread, until closed."""

    def __init__(self) -> None:
        self.body = b""
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = urlsplit(self.path).path == "/"
                body = owner.body if found else b"not found"
                with contextlib.suppress(ConnectionError):  # the browser went away
                    self.send_response(200 if found else 404)
                    self.send_header("content-type", "text/html; charset=utf-8")
                    self.send_header("content-length", str(len(body)))
                    self.send_header("cache-control", "no-store")
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


# -- the decision server ----------------------------------------------------------------------


def decision_server(
    bundle: Path, root: Path, page_origin: str
) -> contextlib.AbstractContextManager[Server]:
    """``python -m server`` (one worker) on 127.0.0.1 as :func:`benchmarks._load.serve` starts
    it, with the public key allowed for ``page_origin``; its process group is killed on the
    way out whatever happens."""
    return serve(bundle, root, workers=1, origins=[page_origin])


def tag_metrics(server_url: str) -> dict[str, Any]:
    """The server's ``tailor_tag_*`` metrics: what the tags' pageview events reported (the
    warm-up loads included)."""
    text = httpx.get(f"{server_url}/metrics", timeout=10).text
    samples = {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("tailor_tag_")
        for s in family.samples
        if not s.labels
    }
    out: dict[str, Any] = {"timeouts": samples.get("tailor_tag_timeouts_total")}
    for kind in ("time_to_decision", "slots_hidden"):
        count = samples.get(f"tailor_tag_{kind}_seconds_count")
        total = samples.get(f"tailor_tag_{kind}_seconds_sum")
        out[kind] = {
            "count": int(count) if count is not None else None,
            "mean_ms": round(total / count * 1000, 2) if count and total is not None else None,
        }
    return out


# -- the browser ------------------------------------------------------------------------------


@dataclass
class Response:
    """What the browser reported of one request of a page."""

    url: str
    method: str
    status: int | None = None
    headers: dict[str, str] | None = None
    from_cache: bool = False
    body_bytes: int = 0
    wire_bytes: int | None = None
    failed: str | None = None
    finished: bool = False


class Visitor:
    """A fresh browser context (its own cache, storage and connections) with one recorded page,
    whose requests are also followed to their end (finished or failed)."""

    def __init__(self, browser: Browser, timeout: float) -> None:
        self.context = browser.new_context(viewport=VIEWPORT)
        try:
            self.context.set_default_timeout(timeout * 1000)
            self.page = self.context.new_page()
            self.recorder = Recorder(self.page)
            self.ended: dict[Request, str | None] = {}  # request -> failure text, None if fine
            self.page.on("requestfinished", lambda r: self.ended.__setitem__(r, None))
            self.page.on("requestfailed", lambda r: self.ended.__setitem__(r, r.failure or "?"))
            self.page.add_init_script(RECORDER)
        except BaseException:
            self.close()
            raise

    def response(self, request: Request) -> Response:
        """What became of ``request`` so far; ask before the page leaves its document."""
        out = Response(url=request.url, method=request.method)
        if request not in self.ended:
            return out
        out.finished = True
        out.failed = self.ended[request]
        answer = request.response()
        if out.failed is not None or answer is None:
            return out
        out.status = answer.status
        out.headers = answer.all_headers()
        sizes = request.sizes()
        # Chromium's bytes received for it, headers included: none when served from the cache.
        out.wire_bytes = max(sizes["responseHeadersSize"] + sizes["responseBodySize"], 0)
        out.from_cache = out.wire_bytes == 0
        with contextlib.suppress(PlaywrightError):  # no body (a redirect, a 204)
            out.body_bytes = len(answer.body())
        return out

    def close(self) -> None:
        with contextlib.suppress(PlaywrightError):
            self.context.close()


def _loopback(url: str) -> bool:
    return urlsplit(url).hostname == "127.0.0.1"


def _server_total_ms(header: str | None) -> float | None:
    """The ``total`` of a ``Server-Timing`` header, in ms."""
    for part in (header or "").split(","):
        name, _, params = part.strip().partition(";")
        if name == "total" and params.startswith("dur="):
            return float(params[4:])
    return None


def _pageview(visitor: Visitor, since: int, wait: float) -> dict[str, Any] | None:
    """The properties of the first ``pageview`` event the page sent after request ``since``."""
    deadline = time.monotonic() + wait
    while True:
        for request in visitor.recorder.requests[since:]:
            if "/v1/events" not in request.url or not request.post_data:
                continue
            with contextlib.suppress(ValueError):
                for event in json.loads(request.post_data).get("events", []):
                    if event.get("type") == "pageview":
                        return dict(event.get("properties") or {})
        if time.monotonic() > deadline:
            return None
        visitor.page.wait_for_timeout(20)  # polling for the beacon (and receiving its event)


def view(visitor: Visitor, url: str, *, wait_ms: int) -> dict[str, Any]:
    """One page view: load ``url``, wait for the slots, read the page's clock, have the tag
    send its pageview event, leave the page, and return the sample."""
    page, requests = visitor.page, visitor.recorder.requests
    first_request = len(requests)
    page.goto(url, wait_until="load")
    page.evaluate(WAIT_JS.replace("@MS@", str(wait_ms)))  # resolves by itself after wait_ms
    seen = page.evaluate(COLLECT_JS)
    measured = len(requests)
    page.evaluate(FLUSH_JS)
    reported = _pageview(visitor, measured, wait=3.0)
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:  # let the beacon reach the server before going on
        beacons = [r for r in requests[measured:] if "/v1/events" in r.url]
        if all(r in visitor.ended for r in beacons):
            break
        page.wait_for_timeout(10)  # polling for the beacon's answer
    responses = [visitor.response(r) for r in requests[first_request:]]
    page.goto("about:blank")
    return _sample(seen, reported, responses, requests[first_request:measured])


def _sample(
    seen: dict[str, Any],
    reported: dict[str, Any] | None,
    responses: list[Response],
    requests: Sequence[Request],
) -> dict[str, Any]:
    """The sample of one view from what the page measured, what the tag reported and what
    the browser's network records say."""
    tag = next((r for r in responses if TAG_PATH in r.url), None)
    decide = next((r for r in responses if "/v1/decide" in r.url), None)
    decide_body = next((r.post_data for r in requests if "/v1/decide" in r.url), None)
    timing, rt_tag = seen.get("decide") or {}, seen.get("tag") or {}
    measures: dict[str, float | None] = {
        "decide_sent": timing.get("start"),
        "decide_network": timing.get("duration"),
        "slots_filled": seen.get("filled"),
        "document_parsed": (seen.get("document") or {}).get("domContentLoaded"),
        "tag_loaded": rt_tag.get("end"),
        "tag_started": seen.get("started"),
        "decide_answered": timing.get("end"),
        "next_frame": seen.get("frame"),
        "tag_time_to_decision": (reported or {}).get("timeToDecisionMs"),
        "tag_slots_hidden": (reported or {}).get("slotsHiddenMs"),
        "server": _server_total_ms((decide.headers or {}).get("server-timing") if decide else None),
    }
    variants = seen.get("variants") or {}
    return {
        "measures": {k: round(float(v), 2) if v is not None else None for k, v in measures.items()},
        "filled": bool(variants) and all(variants.values()),
        "variants": variants,
        "timed_out": bool((reported or {}).get("timedOut")),
        "document": seen.get("document"),
        "decide_status": decide.status if decide else None,
        "decide_cache": (decide.headers or {}).get("x-tailor-cache") if decide else None,
        "decide_request_bytes": len(decide_body.encode()) if decide_body else None,
        "decide_response_bytes": decide.body_bytes if decide else None,
        "tag_from_cache": tag.from_cache if tag else None,
        "tag_wire_bytes": tag.wire_bytes if tag else None,
        "tag_body_bytes": tag.body_bytes if tag else None,
        "tag_encoding": (tag.headers or {}).get("content-encoding", "identity") if tag else None,
        "blocked": [r.url for r in responses if r.failed and not _loopback(r.url)],
        "failed": [f"{r.url}: {r.failed}" for r in responses if r.failed],
    }


# -- statistics and the report ----------------------------------------------------------------


def _percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of sorted data (as :mod:`benchmarks.run`)."""
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """n, median and p95 (nearest rank), min, max and mean of ``values`` (ms)."""
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}
    return {
        "n": len(ordered),
        "median_ms": round(_percentile(ordered, 50), 2),
        "p95_ms": round(_percentile(ordered, 95), 2),
        "min_ms": round(ordered[0], 2),
        "max_ms": round(ordered[-1], 2),
        "mean_ms": round(sum(ordered) / len(ordered), 2),
    }


def series_report(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The summary of one series of page views."""
    measures = {
        name: summarize(
            [s["measures"][name] for s in samples if s["measures"].get(name) is not None]
        )
        for name in MEASURES
    }
    keys = ("tag_wire_bytes", "tag_body_bytes", "decide_request_bytes", "decide_response_bytes")
    return {
        "loads": len(samples),
        "filled": sum(s["filled"] for s in samples),
        "timed_out": sum(s["timed_out"] for s in samples),
        "decide_status": dict(Counter(str(s["decide_status"]) for s in samples)),
        "decide_cache": dict(Counter(str(s["decide_cache"]) for s in samples)),
        "tag_from_cache": sum(bool(s["tag_from_cache"]) for s in samples),
        "sizes_median": {key: sizes_median(samples, key) for key in keys},
        "measures": measures,
    }


def sizes_median(samples: Sequence[dict[str, Any]], key: str) -> int | None:
    """The median (upper middle) of a size over the samples that have it."""
    values = sorted(s[key] for s in samples if s.get(key) is not None)
    return values[len(values) // 2] if values else None


def markdown(report: dict[str, Any]) -> str:
    """The short table (and the lines around it) printed at the end of a run."""
    series = report["series"]
    first, repeat = series["first_visit"], series.get("repeat_view")
    lines = [
        f"Tag time to decision, {first['loads']} page loads "
        f"({report['machine'].get('chromium')}, {report['machine'].get('cpu')}, "
        f"{report['machine'].get('cpus')} CPUs), ms from navigation start unless noted:",
        "",
        "| measure | first visit median | p95 | min | max | repeat view median | p95 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in TABLE:
        a = first["measures"][name]
        b = repeat["measures"][name] if repeat else {"n": 0}
        if not a.get("n"):
            continue
        row = [a["median_ms"], a["p95_ms"], a["min_ms"], a["max_ms"]]
        row += [b["median_ms"], b["p95_ms"]] if b.get("n") else ["-", "-"]
        lines.append(f"| {name} | " + " | ".join(str(x) for x in row) + " |")
    tag = report["tag"]
    lines += [
        "",
        f"Slots filled on {first['filled']}/{first['loads']} first visits"
        + (f" and {repeat['filled']}/{repeat['loads']} repeat views" if repeat else "")
        + f"; tag timeouts: {first['timed_out']}"
        + (f" + {repeat['timed_out']}" if repeat else "")
        + ".",
        f"Tag script: {tag['wire_bytes']} bytes on the wire ({tag['encoding']}), "
        f"{tag['body_bytes']} bytes of JavaScript, {tag['gzip_bytes']} gzipped (level 9)."
        f" Decide: {first['sizes_median']['decide_request_bytes']} bytes up, "
        f"{first['sizes_median']['decide_response_bytes']} down.",
    ]
    if repeat:
        lines.append(f"Repeat views: decide answered with x-tailor-cache {repeat['decide_cache']}.")
    if not report["complete"]:
        lines.append(f"INCOMPLETE: {first['loads']} loads measured; errors: {report['errors']}")
    return "\n".join(lines) + "\n"


def _chromium_version(browser: Browser) -> str:
    return f"Chrome/{browser.version}"


def _machine() -> dict[str, Any]:
    from benchmarks.run import machine

    try:
        info = machine()
    except OSError:  # it also asks wrk for its version, which this benchmark does not need
        info = {"cpus": os.cpu_count(), "load_average_before": list(os.getloadavg())}
    info.pop("wrk", None)
    return info


def measure(args: argparse.Namespace, tmp: Path, started: float) -> dict[str, Any]:
    """The whole run; returns the report."""
    bundle = Path(args.bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    slots = slots_of(bundle)
    info = _machine()
    measured_at = datetime.now(UTC)
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in SERIES}
    per_view = 20.0  # seconds at most for each browser call of a page view
    wait_ms = max(args.tag_timeout or 600, 600) + 2000
    complete = True
    errors: list[str] = []
    with contextlib.ExitStack() as stack:
        site = PageServer()
        stack.callback(site.close)
        server = stack.enter_context(decision_server(bundle, tmp / "server", site.origin))
        site.body = page_html(slots, server.url, args.tag_timeout).encode()
        browser = stack.enter_context(launch(timeout=20))
        info["chromium"] = _chromium_version(browser)
        print(f"server {server.url}, page {site.origin}/, {info['chromium']}", flush=True)
        url = f"{site.origin}/"
        for i in range(args.warmup + args.loads):
            if time.monotonic() - started > args.deadline:
                complete = False
                print(f"deadline of {args.deadline:g} s reached: stopping", file=sys.stderr)
                break
            try:
                visitor = Visitor(browser, timeout=per_view)
                try:
                    one = view(visitor, url, wait_ms=wait_ms)
                    two = view(visitor, f"{url}?view=2", wait_ms=wait_ms)
                finally:
                    visitor.close()
            except (PlaywrightError, TimeoutError) as exc:  # reported, and the run goes on
                errors.append(f"load {i + 1 - args.warmup}: {type(exc).__name__}: {exc}")
                print(errors[-1], file=sys.stderr)
                continue
            if i >= args.warmup:
                samples["first_visit"].append(one)
                samples["repeat_view"].append(two)
            done = i + 1 - args.warmup
            if done > 0 and (done % 10 == 0 or done == args.loads):
                print(f"{done}/{args.loads} loads", flush=True)
        metrics = tag_metrics(server.url)
        problems = server.log_problems()
        tag_body = httpx.get(f"{server.url}{TAG_PATH}", timeout=10).content
    first = samples["first_visit"]
    return {
        "report_version": REPORT_VERSION,
        "measured_at": measured_at.isoformat(timespec="seconds"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "complete": complete and not errors,
        "errors": errors,
        "machine": info,
        "config": {
            "loads": args.loads,
            "warmup": args.warmup,
            "quick": args.quick,
            "deadline_s": args.deadline,
            "tag_timeout_ms": args.tag_timeout,
            "bundle": manifest.get("modelVersion"),
            "slots": [sid for sid, _ in slots],
            "server_workers": 1,
            "page": "cross-origin store page (stdlib server), tag async in <head> with data-key",
        },
        "measures": MEASURES,
        "tag": {
            "path": TAG_PATH,
            "wire_bytes": sizes_median(first, "tag_wire_bytes"),
            "body_bytes": len(tag_body),
            "encoding": next((s["tag_encoding"] for s in first if s["tag_encoding"]), None),
            "gzip_bytes": len(gzip.compress(tag_body, compresslevel=9)),
        },
        "series": {name: series_report(s) for name, s in samples.items()},
        "server": {"tag_metrics": metrics, "log": problems},
        "blocked_requests": sorted({u for s in samples.values() for x in s for u in x["blocked"]}),
        "samples": samples,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def _raise_on_signal(signum: int, frame: FrameType | None) -> None:
    if signum == signal.SIGALRM:
        raise DeadlineExceeded("the run outlived its deadline")
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.tag", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    parser.add_argument("--loads", type=int, default=50, help="first visits measured (50)")
    parser.add_argument("--out", default=None, help=f"report file ({DEFAULT_OUT})")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--warmup", type=int, default=None, help="loads not reported (3)")
    parser.add_argument("--deadline", type=float, default=None, help="seconds (300)")
    parser.add_argument(
        "--tag-timeout", type=int, default=None, help="the tag's data-timeout, ms (its own 600)"
    )
    args = parser.parse_args(argv)
    if args.loads < 1:
        parser.error("--loads must be at least 1")
    if args.warmup is None:
        args.warmup = 1 if args.quick else 3
    if args.deadline is None:
        args.deadline = 120.0 if args.quick else 300.0
    if not (Path(args.bundle) / "manifest.json").is_file():
        parser.error(f"no bundle at {args.bundle}: `tailor train --out {args.bundle}`")
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _raise_on_signal)  # unwind, so that everything is stopped
    signal.signal(signal.SIGALRM, _raise_on_signal)
    signal.alarm(int(args.deadline) + 120)  # backstop: every wait has its own timeout too
    try:
        with tempfile.TemporaryDirectory(prefix="tailor-tag-bench-") as tmp:
            report = measure(args, Path(tmp), started)
    except KeyboardInterrupt:
        print("interrupted: the browser and the server are stopped", file=sys.stderr)
        return 130
    except DeadlineExceeded as exc:
        print(f"{exc}: the browser and the server are stopped, no report", file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)
    print()
    print(markdown(report))
    out = Path(args.out) if args.out else None if args.quick else DEFAULT_OUT
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {out}")
    return 0 if report["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
