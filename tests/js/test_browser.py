"""The browser tag (server/static/tailor.js) in a real headless Chromium, driven by Playwright
(tests/js/browser.py), against a real server process on 127.0.0.1.

What the pages show is checked against what the server answered the page (the response to the
very request the tag sent, or that request re-POSTed once it carries the visitor token: the
server caches a visit's decision, so the answer is the one the page got); what the tag sends
back is checked where it lands: the server's event log, ``/metrics`` and ``POST /v1/me``.

Identity: with storage consent the server answers a visitor without a valid token with a new
visitor id and a token for it, which the tag keeps; so a visitor is named by the decision's
``visitorId``, not by the id in the first request.

Independence: every test gets a browser context of its own (a fresh profile: empty
localStorage, no cached tag). The module shares one server of its own (demo mode: keyless
loopback is the implicit public key; visitor and user token secrets of the tests; no per-IP
rate limit), so its event log and metrics hold this module's traffic only. Pages other than
the demo store are served from a second origin by a stdlib HTTP server; they give the tag a
5 s timeout, so that a slow shared machine does not turn a decision into a timeout (the demo
page keeps the default 600 ms).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Request, Response, Route
from prometheus_client.parser import text_string_to_metric_families

from sdk.logs import visitor_hash
from sdk.tokens import user_token
from tests.conftest import (
    PLANTED_PERSONAS,
    TEST_TOKEN_SECRET,
    TEST_USER_TOKEN_SECRET,
    LiveServer,
    _start_server,
)
from tests.js.browser import VIEWPORT, Recorder, eventually, wait_for

pytestmark = pytest.mark.browser

DEMO_SLOTS = {"banner", "hero", "recommendation"}
#: Elements the tag keeps when it inserts ``html`` content (js_snippet/src/core.js).
ALLOWED_TAGS = {"a", "p", "span", "strong", "em", "b", "i", "h1", "h2", "h3", "h4"}
ALLOWED_TAGS |= {"ul", "ol", "li", "br", "img", "div", "small"}

#: Runs before any script of every document: records the decisions the tag hands to page
#: callbacks (with ``applied``), the slot a click lands on, and, each time the tag's
#: ``data-tailor-pending`` attribute changes, whether the slots and the body are visible.
RECORDER = """
(() => {
  const rec = (window.__test = { decisions: [], clicks: [], snapshots: [] });
  window.tailor = window.tailor || [];
  window.tailor.push(["onDecision", (d, applied) => rec.decisions.push({
    decisionId: d.decisionId,
    visitorId: d.visitorId,
    visitorToken: d.visitorToken,
    applied,
    slots: Object.fromEntries(Object.entries(d.slots).map(([k, v]) => [k, v.variantId])),
  })]);
  document.addEventListener("click", (e) => {
    const slot = e.target.closest("[data-tailor-slot]");
    rec.clicks.push(slot ? slot.dataset.tailorSlot : null);
  }, true);
  new MutationObserver(() => {
    const slots = {};
    for (const el of document.querySelectorAll("[data-tailor-slot]")) {
      slots[el.dataset.tailorSlot] = {
        visibility: getComputedStyle(el).visibility,
        filled: el.hasAttribute("data-tailor-variant"),
      };
    }
    rec.snapshots.push({
      t: performance.now(),
      body: document.body && getComputedStyle(document.body).visibility,
      slots,
    });
  }).observe(document, {
    attributes: true, subtree: true, attributeFilter: ["data-tailor-pending"],
  });
})();
"""

#: Every slot on the page: its attributes, normalised text, markup and visibility.
SLOTS_JS = """
[...document.querySelectorAll("[data-tailor-slot]")].map((el) => ({
  slot: el.dataset.tailorSlot,
  id: el.id,
  variant: el.dataset.tailorVariant ?? null,
  decision: el.dataset.tailorDecision ?? null,
  text: el.textContent.replace(/\\s+/g, " ").trim(),
  html: el.innerHTML,
  href: el.querySelector("a") ? el.querySelector("a").getAttribute("href") : null,
  visibility: getComputedStyle(el).visibility,
}))
"""

GPC = """Object.defineProperty(Navigator.prototype, "globalPrivacyControl", { get: () => true });"""


# --- the server ------------------------------------------------------------------------------


@dataclass
class Server:
    """The module's server: its URL, event log directory and what it answers."""

    live: LiveServer
    events_dir: Path

    @property
    def url(self) -> str:
        return self.live.url

    def decide(self, body: str) -> tuple[dict[str, Any], str]:
        """The server's answer to a decide body the tag sent, and its ``x-tailor-cache``."""
        answer = httpx.post(
            f"{self.url}/v1/decide",
            content=body,
            headers={"content-type": "text/plain;charset=UTF-8"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        return answer.json(), answer.headers.get("x-tailor-cache", "")

    def events(self, visitor_id: str) -> list[dict[str, Any]]:
        """The ``kind: event`` lines of the event log about ``visitor_id``, in log order."""
        found = []
        for path in sorted(self.events_dir.glob("events-*.jsonl")):
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line being written right now; complete at the next look
                if record.get("kind") == "event" and record.get("visitorId") == visitor_id:
                    found.append(record)
        return found

    def wait_events(
        self, visitor_id: str, done: Callable[[list[dict[str, Any]]], bool], what: str
    ) -> list[dict[str, Any]]:
        """The visitor's logged events once ``done`` holds for them (the log is written every
        second)."""
        box: list[list[dict[str, Any]]] = []

        def check() -> bool:
            box[:] = [self.events(visitor_id)]
            return done(box[0])

        eventually(check, what, timeout=15, last=lambda: box[0] if box else None)
        return box[0]

    def metrics(self) -> dict[str, float]:
        """The unlabelled samples of ``/metrics`` (``name_total``, ``name_count``...)."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if not sample.labels
        }

    def mark(self) -> None:
        """Log a consented decision of a visitor of its own and wait until it is written: what
        the server logged before it is on disk then (one worker, one file, in order)."""
        consent = {"personalization": True, "storage": True}
        answer, _ = self.decide(
            json.dumps({"visitorId": f"m-{uuid.uuid4().hex}", "consent": consent})
        )
        marker = answer["visitorId"]  # the server's id for a visitor without a token
        eventually(lambda: bool(self.logged(marker)), "the marker decision in the log", timeout=15)

    def records(self, visitor_id: str, kind: str) -> list[dict[str, Any]]:
        """The log records of ``kind`` (``decision``, ``event``) under ``visitor_id``."""
        return [
            record
            for path in sorted(self.events_dir.glob("events-*.jsonl"))
            for line in path.read_text().splitlines()
            if line.endswith("}")
            and (record := json.loads(line)).get("visitorId") == visitor_id
            and record.get("kind") == kind
        ]

    def me(self, token: str, path: str = "/v1/me") -> httpx.Response:
        """``POST /v1/me`` (or ``/v1/me/forget``) with ``token``, as the tag sends it."""
        return httpx.post(
            self.url + path,
            content=json.dumps({"visitorToken": token}),
            headers={"content-type": "text/plain;charset=UTF-8"},
            timeout=10,
        )

    def logged(self, visitor_id: str) -> list[str]:
        """The kinds of the log lines (decisions and events) under ``visitor_id``."""
        return [
            record["kind"]
            for path in sorted(self.events_dir.glob("events-*.jsonl"))
            for line in path.read_text().splitlines()
            if line.endswith("}") and (record := json.loads(line)).get("visitorId") == visitor_id
        ]


@pytest.fixture(scope="module")
def server(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of this module's own: the demo (keyless loopback), no per-IP limit; warmed
    up with one decision so the first page does not pay for it."""
    tmp = tmp_path_factory.mktemp("browser-server")
    keys = tmp / "keys.json"
    keys.write_text(json.dumps({"keys": [], "per_ip_per_minute": 0}))
    env = {
        "TAILOR_KEYS_FILE": str(keys),
        "TAILOR_DEMO": "1",  # demo mode takes no keys
        "TAILOR_TOKEN_SECRETS": TEST_TOKEN_SECRET,
        "TAILOR_USER_TOKEN_SECRETS": TEST_USER_TOKEN_SECRET,
    }
    live = _start_server(bundle_dir, tmp / "server.log", env)
    try:
        port = urlsplit(live.url).port
        warm_up = {"visitorId": "warm-up", "consent": {"personalization": True, "storage": True}}
        assert httpx.post(f"{live.url}/v1/decide", json=warm_up, timeout=10).status_code == 200
        yield Server(live, tmp / f"events-{port}")
    finally:
        live.process.terminate()
        live.process.wait(timeout=10)


# --- pages on another origin -----------------------------------------------------------------

#: Custom pages; ``<!--TAG ...-->`` becomes the tag's script element with those attributes.
PAGES = {
    "/pending": """<!doctype html><title>pending</title>
<script>window.tailor = window.tailor || [];</script>
<!--TAG data-consent="pending"-->
<div id="hero" data-tailor-slot="hero">Default hero</div>""",
    "/default": """<!doctype html><title>default</title>
<script>
  window.tailor = window.tailor || [];
  tailor.push(["identify", "user_42"]);
</script>
<!--TAG-->
<div id="hero" data-tailor-slot="hero">Default hero</div>""",
    "/spa": """<!doctype html><title>spa</title>
<script>window.tailor = window.tailor || [];</script>
<!--TAG data-consent="granted"-->
<div id="hero" data-tailor-slot="hero">Default hero</div>""",
    "/late": """<!doctype html><title>late</title>
<script>window.tailor = window.tailor || [];</script>
<!--TAG data-consent="granted"-->
<div id="hero" data-tailor-slot="hero">Default hero</div>""",
    "/fold": """<!doctype html><title>fold</title>
<script>window.tailor = window.tailor || [];</script>
<!--TAG data-consent="granted"-->
<div id="hero" data-tailor-slot="hero">Default hero</div>
<div style="height: 3000px">A long page</div>
<div id="below" data-tailor-slot="recommendation">Default recommendation</div>""",
    "/errors": """<!doctype html><title>errors</title>
<script>
  window.tailor = window.tailor || [];
  tailor.push(["onDecision", function () { throw new Error("thrown before the tag loaded"); }]);
  tailor.push(["onDecision", function (d, applied) { window.firstCallback = d.decisionId; }]);
</script>
<!--TAG data-consent="granted" data-debug-->
<div id="hero" data-tailor-slot="hero">Default hero</div>
<script>
  window.addEventListener("load", function () {
    window.tagLoadedAtLoad = typeof tailor.version === "string";
    tailor.push(["onDecision", function () { throw new Error("thrown after the tag loaded"); }]);
    tailor.push(["nonexistent"]);
    window.pageScriptGoesOn = true;
    tailor.push(["onDecision", function (d) { window.laterCallback = d.decisionId; }]);
  });
</script>""",
}


@dataclass
class Site:
    base: str

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture(scope="module")
def site(server: Server) -> Iterator[Site]:
    """Serves PAGES from 127.0.0.1 on a port of its own (another origin than the server's)."""

    def render(html: str) -> bytes:
        start = html.find("<!--TAG")
        if start < 0:
            return html.encode()
        end = html.index("-->", start)
        attrs = html[start + len("<!--TAG") : end].strip()
        script = (
            f'<script async src="{server.url}/tag/v1/tailor.js" data-endpoint="{server.url}" '
            f'data-timeout="5000" {attrs}></script>'
        )
        return (html[:start] + script + html[end + 3 :]).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            page = PAGES.get(urlsplit(self.path).path)
            body = render(page) if page is not None else b"not found"
            self.send_response(200 if page is not None else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, name="test-browser-site", daemon=True)
    thread.start()
    try:
        yield Site(f"http://127.0.0.1:{httpd.server_address[1]}")
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# --- the browser -----------------------------------------------------------------------------


def open_page(context: BrowserContext, *init_scripts: str) -> Recorder:
    """A new recorded page that runs RECORDER, then ``init_scripts``, in every document."""
    page = context.new_page()
    for script in (RECORDER, *init_scripts):
        page.add_init_script(script)
    return Recorder(page)


@pytest.fixture
def rec(context: BrowserContext) -> Recorder:
    return open_page(context)


@pytest.fixture
def page(rec: Recorder) -> Page:
    return rec.page


def pump(page: Page) -> Callable[[float], None]:
    """A pause for :func:`eventually` that lets Playwright deliver the page's events."""
    return lambda seconds: page.wait_for_timeout(seconds * 1000)


def raw_bodies(rec: Recorder, path: str) -> list[str]:
    """The bodies of the POSTs the page sent to ``path`` (``/v1/decide``...) exactly as sent (to
    re-POST them), in order."""
    return [
        r.post_data
        for r in rec.requests
        if r.method == "POST" and urlsplit(r.url).path == path and r.post_data
    ]


def bodies(rec: Recorder, path: str) -> list[dict[str, Any]]:
    """The JSON bodies of the POSTs the page sent to ``path``, in order."""
    return [json.loads(body) for body in raw_bodies(rec, path)]


def sent_events(rec: Recorder) -> list[dict[str, Any]]:
    """Every event of every batch the page sent while it was alive (batches sent during unload
    are not recorded by Chromium)."""
    return [event for batch in bodies(rec, "/v1/events") for event in batch["events"]]


def wait_sent(
    rec: Recorder, done: Callable[[list[dict[str, Any]]], bool], what: str
) -> list[dict[str, Any]]:
    """The events the page sent, once ``done`` holds for them (the tag batches per second)."""
    box: list[list[dict[str, Any]]] = []

    def check() -> bool:
        box[:] = [sent_events(rec)]
        return done(box[0])

    eventually(check, what, timeout=10, pause=pump(rec.page), last=lambda: box[0] if box else None)
    return box[0]


def wait_decided(page: Page, count: int = 1) -> list[dict[str, Any]]:
    """The decisions handed to page callbacks, once there are ``count``; all must be applied."""
    decisions: list[dict[str, Any]] = wait_for(
        page, f"window.__test && __test.decisions.length >= {count} && __test.decisions"
    )
    late = [d for d in decisions if not d["applied"]]
    assert not late, f"decisions arrived after the tag's timeout (machine overloaded?): {late}"
    return decisions


def slots(page: Page) -> dict[str, dict[str, Any]]:
    """The page's slots by slot id (the element id when it has one)."""
    return {s["id"] or s["slot"]: s for s in page.evaluate(SLOTS_JS)}


def anonymous_decides(rec: Recorder, page: Page) -> list[dict[str, Any]]:
    """The page's two decide requests, once both are answered, each checked to grant nothing
    and carry no session, user id or behaviour, and a throwaway visitor id of its own."""
    wait_decided(page, 2)
    decides = bodies(rec, "/v1/decide")
    assert len(decides) == 2
    for body in decides:
        assert body["consent"] == {"personalization": False, "storage": False}
        assert "sessionId" not in body and "userId" not in body
        assert body["behavior"] == {}
    assert decides[0]["visitorId"] != decides[1]["visitorId"]
    return decides


def module_requests(rec: Recorder) -> list[Request]:
    """The page's requests for the module with ``tailor.myData()`` (``tailor-me.js``)."""
    return [r for r in rec.requests if urlsplit(r.url).path == "/tag/v1/tailor-me.js"]


def local_storage(page: Page) -> dict[str, str]:
    found: dict[str, str] = page.evaluate("({...localStorage})")
    return found


def click(page: Page, selector: str) -> None:
    """A real mouse click (browser input) on a point of ``selector`` that is not on a link."""
    point = page.evaluate(
        f"""(() => {{
      const el = document.querySelector({json.dumps(selector)});
      const r = el.getBoundingClientRect();
      for (let fy = 0.95; fy > 0; fy -= 0.1) for (let fx = 0.02; fx < 1; fx += 0.08) {{
        const x = r.left + r.width * fx, y = r.top + r.height * fy;
        const hit = document.elementFromPoint(x, y);
        if (hit && el.contains(hit) && !hit.closest("a, button")) return [x, y];
      }}
      return null;
    }})()"""
    )
    assert point, f"no point of {selector} in the viewport off its links"
    page.mouse.click(point[0], point[1])


#: Sets ``document.visibilityState`` (and ``hidden``) and fires ``visibilitychange``, as the
#: browser does when the user switches away and back: Playwright keeps its pages visible (its
#: focus emulation does), so minimising the window would not hide one.
VISIBILITY_JS = """(state) => {
  for (const [name, value] of [["visibilityState", state], ["hidden", state === "hidden"]]) {
    Object.defineProperty(document, name, { configurable: true, get: () => value });
  }
  document.dispatchEvent(new Event("visibilitychange"));
}"""


def set_visibility(page: Page, state: str) -> None:
    """Makes the page ``"hidden"`` (as when the user switches away) or ``"visible"`` again."""
    page.evaluate(VISIBILITY_JS, state)
    assert page.evaluate("document.visibilityState") == state


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def shown_text(content: dict[str, Any]) -> str | None:
    """The text the tag shows for a decision's Content, whitespace-normalised; None when that
    is not simply text (an image, or html with elements the tag drops with their content)."""
    kind = content["type"]
    if kind == "text":
        text = content["text"]
    elif kind == "link":
        text = content.get("text") or content["href"]
    elif kind == "html":
        parser = _Text()
        parser.feed(content["html"])
        parser.close()
        if not parser.tags <= ALLOWED_TAGS:
            return None
        text = "".join(parser.parts)
    else:
        return None
    return " ".join(str(text).split())


def assert_shows(shown: dict[str, Any], decided: dict[str, Any], decision_id: str) -> None:
    """The slot element ``shown`` displays the server's SlotDecision ``decided``."""
    assert shown["variant"] == decided["variantId"], shown
    assert shown["decision"] == decision_id, shown
    assert shown["visibility"] == "visible", shown
    content = decided["content"]
    text = shown_text(content)
    if text is not None:
        assert shown["text"] == text, (shown, content)
    if content["type"] == "link":
        assert shown["href"] == content["href"], (shown, content)


def _answered(rec: Recorder, path: str) -> list[Response]:
    """The server's responses to the page's POSTs to ``path``, in order."""
    found = []
    for r in rec.requests:
        if r.method == "POST" and urlsplit(r.url).path == path:
            response = r.response()
            assert response is not None, f"no answer to {r.url}"
            found.append(response)
    return found


def answers(rec: Recorder, path: str) -> list[dict[str, Any]]:
    """The JSON answers the server gave to the page's POSTs to ``path``, in order."""
    return [response.json() for response in _answered(rec, path)]


def statuses(rec: Recorder, path: str) -> list[int]:
    """The HTTP statuses of the server's answers to the page's POSTs to ``path`` (batches sent
    while a page unloads are not recorded)."""
    return [response.status for response in _answered(rec, path)]


def demo_visit(
    context: BrowserContext, server: Server, query: str = ""
) -> tuple[dict[str, Any], dict[str, Any], Page]:
    """Opens the demo page (with ``query``) and checks that its slots show the server's answer
    to the request the tag sent; returns (decide body, the server's answer, the page)."""
    rec = open_page(context)
    page = rec.page
    page.goto(f"{server.url}/{query}")
    [decided] = wait_decided(page)
    [raw] = raw_bodies(rec, "/v1/decide")
    [answer] = answers(rec, "/v1/decide")
    assert answer["decisionId"] == decided["decisionId"]
    assert set(answer["slots"]) == DEMO_SLOTS
    shown = slots(page)
    assert set(shown) == DEMO_SLOTS
    for slot, decided in answer["slots"].items():
        assert_shows(shown[slot], decided, answer["decisionId"])
    return json.loads(raw), answer, page


# --- the tests -------------------------------------------------------------------------------


def test_a_late_decision_leaves_the_defaults_and_is_reported_as_a_timeout(
    server: Server, rec: Recorder, page: Page
) -> None:
    # Only the decide call is slow (1.5 s), against the demo page's default 600 ms timeout.
    def latency(route: Route) -> None:
        page.wait_for_timeout(1500)  # held in the browser meanwhile, as a slow network would
        route.continue_()

    page.route("**/v1/decide*", latency)
    before = server.metrics()
    page.goto(f"{server.url}/")
    [late] = wait_for(page, "__test.decisions.length && __test.decisions")
    assert late["applied"] is False
    assert set(late["slots"]) == DEMO_SLOTS

    # Hidden while waiting (the slots only), then shown unfilled at the timeout. The first
    # snapshot is the tag's start (it may run before every slot is parsed); the first one with
    # every slot is when they wait for the decision.
    snapshots = page.evaluate("__test.snapshots")
    hidden = next(s for s in snapshots if set(s["slots"]) == DEMO_SLOTS)
    assert all(s["visibility"] == "hidden" for s in hidden["slots"].values()), snapshots
    assert hidden["body"] == "visible"
    revealed = next(
        s
        for s in snapshots
        if set(s["slots"]) == DEMO_SLOTS
        and all(x["visibility"] == "visible" for x in s["slots"].values())
    )
    assert not any(x["filled"] for x in revealed["slots"].values()), revealed
    assert 500 <= revealed["t"] - snapshots[0]["t"] <= 1500, snapshots

    # After the late decision: still the page's own default markup, visible.
    defaults = page.evaluate(
        f"""(() => {{
      const doc = new DOMParser().parseFromString({json.dumps(httpx.get(server.url).text)},
                                                  "text/html");
      return Object.fromEntries([...doc.querySelectorAll("[data-tailor-slot]")]
        .map((el) => [el.dataset.tailorSlot, el.innerHTML]));
    }})()"""
    )
    for slot, shown in slots(page).items():
        assert shown["variant"] is None and shown["decision"] is None, shown
        assert shown["visibility"] == "visible", shown
        assert shown["html"] == defaults[slot], slot

    # The first page view reports the timeout; the server logs it and counts it.
    visitor = late["visitorId"]  # the server's id for this new visitor
    events = wait_sent(rec, lambda es: any(e["type"] == "pageview" for e in es), "a pageview")
    [pageview] = [e for e in events if e["type"] == "pageview"]
    props = pageview["properties"]
    assert props["timedOut"] is True
    assert 500 <= props["slotsHiddenMs"] <= 1500, props
    assert props["timeToDecisionMs"] >= 1500, props
    assert pageview["decisionId"] == late["decisionId"]
    logged = server.wait_events(
        visitor, lambda es: any(e["type"] == "pageview" for e in es), "the logged pageview"
    )
    assert [e["decisionId"] for e in logged if e["type"] == "pageview"] == [late["decisionId"]]
    after = server.metrics()
    assert after["tailor_tag_timeouts_total"] - before["tailor_tag_timeouts_total"] == 1
    hidden_count = "tailor_tag_slots_hidden_seconds_count"
    hidden_sum = "tailor_tag_slots_hidden_seconds_sum"
    assert after[hidden_count] - before[hidden_count] == 1
    assert 0.5 <= after[hidden_sum] - before[hidden_sum] <= 1.5


def test_each_persona_sees_the_servers_decision(server: Server, browser: Browser) -> None:
    seen: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for preset in ("loyal", "researcher"):
        with browser.new_context(viewport=VIEWPORT) as context:  # a fresh profile per visitor
            body, answer, page = demo_visit(context, server, f"?as={preset}")
            persona = answer["persona"]["id"]
            assert page.evaluate("document.getElementById('d-persona').textContent").endswith(
                f"({persona})"
            )
        seen[preset] = body, answer
    # The presets reached the tag's request...
    loyal, researcher = seen["loyal"][0]["behavior"], seen["researcher"][0]["behavior"]
    assert (loyal["purchases"], loyal["revenue"]) == (14, 2300)
    assert (researcher["searches"], researcher["searchesWithoutResults"]) == (15, 6)
    # ...and the test bundle names their personas as training planted them.
    assert seen["loyal"][1]["persona"]["id"] == PLANTED_PERSONAS["loyal"]
    assert seen["researcher"][1]["persona"]["id"] == PLANTED_PERSONAS["researcher"]
    variants = {
        preset: {slot: s["variantId"] for slot, s in answer["slots"].items()}
        for preset, (_, answer) in seen.items()
    }
    assert variants["loyal"] != variants["researcher"], variants


def test_arriving_from_a_newsletter_changes_the_banner(server: Server, browser: Browser) -> None:
    with browser.new_context(viewport=VIEWPORT) as context:
        direct, direct_answer, _ = demo_visit(context, server)
    with browser.new_context(viewport=VIEWPORT) as context:
        email, email_answer, _ = demo_visit(
            context, server, "?utm_source=newsletter&utm_medium=email&utm_campaign=spring"
        )
    assert direct["context"]["campaign"] == {}
    assert email["context"]["campaign"] == {
        "source": "newsletter",
        "medium": "email",
        "name": "spring",
    }
    assert (
        email_answer["slots"]["banner"]["variantId"]
        != direct_answer["slots"]["banner"]["variantId"]
    )


def test_global_privacy_control_sends_and_stores_nothing(
    server: Server, context: BrowserContext
) -> None:
    identify = """(window.tailor = window.tailor || []).push(["identify", "user_42"]);"""
    rec = open_page(context, GPC, identify)
    page = rec.page
    page.goto(f"{server.url}/")
    wait_decided(page)
    assert slots(page)["hero"]["variant"]  # not personalised, but filled
    # Granting consent cannot lift GPC.
    page.evaluate(
        "tailor.push(['setConsent', {personalization: true, storage: true}]); tailor.decide()"
    )
    decides = anonymous_decides(rec, page)
    visitor = decides[0]["visitorId"]
    assert not [k for k in local_storage(page) if k.startswith("tailor.")]

    click(page, "[data-tailor-slot=hero]")
    assert page.evaluate("__test.clicks") == ["hero"]
    page.evaluate("tailor.push(['track', 'conversion', {value: 49, currency: 'EUR'}])")
    set_visibility(page, "hidden")  # a hidden page sends its queue at once
    assert bodies(rec, "/v1/events") == []
    page.goto("about:blank")  # pagehide: the last chance to send

    # A visitor without GPC, after it: once its events are logged, anything the GPC page sent
    # before would be too.
    control = open_page(context)
    control.page.goto(f"{server.url}/")
    control_visitor = wait_decided(control.page)[0]["visitorId"]
    control.page.goto("about:blank")
    server.wait_events(control_visitor, bool, "the control visitor's events")
    assert server.events(visitor) == []
    assert bodies(rec, "/v1/events") == []
    assert server.logged(visitor) == []  # a refusal: not even the decision is logged
    assert "decision" in server.logged(control_visitor)


def test_pending_consent_stores_and_sends_nothing_until_granted(
    server: Server, site: Site, rec: Recorder, page: Page
) -> None:
    page.goto(site.url("/pending"))
    [decision] = wait_decided(page)
    [decide] = bodies(rec, "/v1/decide")
    assert decide["consent"] == {"personalization": False, "storage": False}
    assert decide["behavior"] == {}
    assert "sessionId" not in decide  # and a throwaway visitor id
    assert slots(page)["hero"]["decision"] == decision["decisionId"]
    # no storage consent: the id is used as sent (a throwaway one), no token is issued
    assert decision["visitorId"] == decide["visitorId"]
    assert decision["visitorToken"] is None
    assert local_storage(page) == {}

    click(page, "#hero")
    assert page.evaluate("__test.clicks") == ["hero"]
    # Two chances to send, both refused while pending: the batch timer (a page timer of the
    # same 1 s, set after the last event was queued, fires after the tag's) and hiding.
    page.evaluate("new Promise((resolve) => setTimeout(resolve, 1000))")
    set_visibility(page, "hidden")
    assert bodies(rec, "/v1/events") == []
    assert local_storage(page) == {}

    set_visibility(page, "visible")
    granted_at = datetime.now(UTC)
    page.evaluate("tailor.push(['setConsent', {personalization: true, storage: true}])")
    stored = local_storage(page)
    visitor = stored["tailor.vid"]
    assert visitor != decide["visitorId"]
    assert json.loads(stored["tailor.sid"])["id"]
    assert json.loads(stored["tailor.profile"])["pageViews"] == 1

    # The queue leaves at once, in one batch that carries the new consent; its events are
    # about the decision they refer to, so about the visitor it was issued to.
    eventually(lambda: bool(bodies(rec, "/v1/events")), "the queued events", pause=pump(page))
    [batch] = bodies(rec, "/v1/events")
    assert batch["consent"] == {"personalization": True, "storage": True}
    assert {e["type"] for e in batch["events"]} == {"pageview", "impression", "click"}
    assert {e["visitorId"] for e in batch["events"]} == {decision["visitorId"]}
    assert statuses(rec, "/v1/events") == [202]
    logged = server.wait_events(
        decision["visitorId"],
        lambda es: len(es) == len(batch["events"]),
        "the queued events in the log",
    )
    assert {e["type"] for e in logged} == {"pageview", "impression", "click"}
    for event in logged:
        assert datetime.fromisoformat(event["receivedAt"]) >= granted_at, event
        assert datetime.fromisoformat(event["timestamp"]) < granted_at, event
        assert event["decisionId"] == decision["decisionId"]


def test_by_default_nothing_is_stored_and_no_id_leaves_before_consent(
    server: Server, site: Site, rec: Recorder, page: Page
) -> None:
    """A tag without ``data-consent`` waits for the page's consent: no ``localStorage``
    write, and its decide request carries a throwaway visitor id, no session or user id."""
    page.goto(site.url("/default"))
    wait_decided(page)
    page.evaluate("tailor.push(['track', 'conversion', {value: 5}]); tailor.decide()")
    decides = anonymous_decides(rec, page)
    set_visibility(page, "hidden")  # the queue would leave now, were consent given
    assert bodies(rec, "/v1/events") == []
    assert local_storage(page) == {}
    server.mark()
    for body in decides:  # the server logged nothing of either visit
        assert server.logged(body["visitorId"]) == []


def test_history_navigation_is_a_new_page_view_with_its_own_decision(
    server: Server, site: Site, rec: Recorder, page: Page
) -> None:
    page.goto(site.url("/spa"))
    [first] = wait_decided(page)
    before = slots(page)["hero"]
    assert before["decision"] == first["decisionId"]
    profile = "JSON.parse(localStorage.getItem('tailor.profile')).pageViews"
    assert page.evaluate(profile) == 1

    page.evaluate(
        """history.pushState({}, "", "/products?utm_source=x");
        const el = document.createElement("div");
        el.id = "banner";
        el.dataset.tailorSlot = "banner";
        el.textContent = "Default banner";
        document.body.appendChild(el);"""
    )
    [_, second] = wait_decided(page, 2)
    first_body, second_body = bodies(rec, "/v1/decide")
    assert first_body["context"]["page"]["path"] == "/spa"
    page_ctx = second_body["context"]["page"]
    assert page_ctx["path"] == "/products"
    assert page_ctx["url"] == site.url("/products?utm_source=x")
    assert second_body["context"]["campaign"] == {"source": "x"}
    assert "banner" in second_body["slots"]
    assert second_body["sessionId"] == first_body["sessionId"]
    # the second request names the server's visitor, proven by its token
    assert second_body["visitorId"] == first["visitorId"] != first_body["visitorId"]
    assert second_body["visitorToken"] == first["visitorToken"]
    answer, cache = server.decide(raw_bodies(rec, "/v1/decide")[1])
    assert cache == "hit"
    assert answer["decisionId"] == second["decisionId"] != first["decisionId"]
    after = slots(page)
    assert_shows(after["banner"], answer["slots"]["banner"], answer["decisionId"])
    assert after["hero"] == before  # the old slot keeps what it shows
    assert page.evaluate(profile) == 2

    page.evaluate("history.back()")
    wait_for(page, f"location.pathname === '/spa' && {profile} === 3", timeout=10)
    eventually(
        lambda: len(bodies(rec, "/v1/decide")) == 3,
        "a decision for the page view",
        pause=pump(page),
    )
    assert bodies(rec, "/v1/decide")[2]["context"]["page"]["path"] == "/spa"
    assert slots(page)["hero"] == before

    page.goto("about:blank")
    visitor = first["visitorId"]
    logged = server.wait_events(
        visitor,
        lambda es: sum(e["type"] == "pageview" for e in es) == 3,
        "three logged pageviews",
    )
    assert sum(e["type"] == "pageview" for e in logged) == 3
    assert rec.console == []


def test_slots_added_later_are_filled(
    server: Server, site: Site, rec: Recorder, page: Page
) -> None:
    page.goto(site.url("/late"))
    [first] = wait_decided(page)
    page.evaluate(
        """for (const [id, slot] of [["hero-2", "hero"], ["banner", "banner"]]) {
          const el = document.createElement("div");
          el.id = id;
          el.dataset.tailorSlot = slot;
          el.textContent = "Default " + slot;
          document.body.appendChild(el);
        }"""
    )
    [_, second] = wait_decided(page, 2)
    shown = slots(page)
    # Another hero: the last decision covers it, so it shows that, without a new request...
    assert shown["hero-2"]["variant"] == shown["hero"]["variant"] == first["slots"]["hero"]
    assert shown["hero-2"]["decision"] == first["decisionId"]
    assert shown["hero-2"]["html"] == shown["hero"]["html"]
    # ...a banner is not covered: one more decision, for it.
    raw = raw_bodies(rec, "/v1/decide")
    assert len(raw) == 2
    assert "banner" in json.loads(raw[1])["slots"]
    answer, cache = server.decide(raw[1])
    assert cache == "hit"
    assert answer["decisionId"] == second["decisionId"] != first["decisionId"]
    assert_shows(shown["banner"], answer["slots"]["banner"], answer["decisionId"])


def test_feedback_events_reach_the_event_log(server: Server, rec: Recorder, page: Page) -> None:
    page.goto(f"{server.url}/")
    [decision] = wait_decided(page)
    shown = slots(page)
    visitor = local_storage(page)["tailor.vid"]
    decision_id = decision["decisionId"]
    assert {s["decision"] for s in shown.values()} == {decision_id}

    click(page, "[data-tailor-slot=hero]")
    assert page.evaluate("__test.clicks") == ["hero"]
    # Once the click has left (a batch per second), a conversion and at once a navigation:
    # the conversion can only leave with the pagehide beacon.
    sent = wait_sent(rec, lambda es: any(e["type"] == "click" for e in es), "the click")
    # each event names the decision and the visitor it was issued to, with an id of its own;
    # the server takes them (a forged or replayed one would be a 403 or 409)
    assert {e["visitorId"] for e in sent} == {decision["visitorId"]} == {visitor}
    assert len({e["eventId"] for e in sent}) == len(sent)
    assert all(e["decisionId"] == decision_id for e in sent)
    answered = statuses(rec, "/v1/events")
    assert answered and set(answered) == {202}, answered
    assert {b["visitorToken"] for b in bodies(rec, "/v1/events")} == {decision["visitorToken"]}
    page.evaluate(
        "tailor.push(['track', 'conversion', {value: 49, currency: 'EUR'}]);"
        "location.href = 'about:blank';"
    )
    logged = server.wait_events(
        visitor,
        lambda es: (
            [e["type"] for e in es].count("impression") == 3
            and {"pageview", "click", "conversion"} <= {e["type"] for e in es}
        ),
        "the page's events",
    )
    assert not any(e["type"] == "conversion" for e in sent_events(rec))

    impressions = {e["slot"]: e for e in logged if e["type"] == "impression"}
    assert set(impressions) == DEMO_SLOTS
    for slot, event in impressions.items():
        assert (event["decisionId"], event["variantId"]) == (decision_id, shown[slot]["variant"])
    [clicked] = [e for e in logged if e["type"] == "click"]
    assert (clicked["slot"], clicked["decisionId"], clicked["variantId"]) == (
        "hero",
        decision_id,
        shown["hero"]["variant"],
    )
    [conversion] = [e for e in logged if e["type"] == "conversion"]
    assert (conversion["value"], conversion["currency"]) == (49.0, "EUR")
    assert conversion["decisionId"] == decision_id
    [pageview] = [e for e in logged if e["type"] == "pageview"]
    assert pageview["decisionId"] == decision_id
    assert len(logged) == 6


def test_a_slot_below_the_fold_is_seen_only_once_scrolled_into_view(
    server: Server, site: Site, rec: Recorder, page: Page
) -> None:
    page.goto(site.url("/fold"))
    [decision] = wait_decided(page)
    shown = slots(page)
    assert shown["below"]["variant"] and shown["hero"]["variant"]

    def impressed(slot: str) -> Callable[[list[dict[str, Any]]], bool]:
        return lambda es: any(e["type"] == "impression" and e["slot"] == slot for e in es)

    # The observer reports both slots in one callback: when the hero's impression has left,
    # the one below the fold was judged not visible.
    events = wait_sent(rec, impressed("hero"), "the hero's impression")
    assert not impressed("recommendation")(events)
    page.evaluate("document.getElementById('below').scrollIntoView()")
    events = wait_sent(rec, impressed("recommendation"), "the impression below the fold")
    [below] = [e for e in events if e["type"] == "impression" and e["slot"] == "recommendation"]
    assert (below["decisionId"], below["variantId"]) == (
        decision["decisionId"],
        shown["below"]["variant"],
    )
    server.wait_events(below["visitorId"], impressed("recommendation"), "the logged impression")


def test_errors_in_page_callbacks_do_not_break_the_page(
    site: Site, rec: Recorder, page: Page
) -> None:
    page.goto(site.url("/errors"))
    [decision] = wait_decided(page)
    assert slots(page)["hero"]["variant"] == decision["slots"]["hero"]
    assert page.evaluate("window.tagLoadedAtLoad") is True
    assert page.evaluate("window.pageScriptGoesOn") is True
    wait_for(page, "window.laterCallback", timeout=5)
    assert (
        page.evaluate("[window.firstCallback, window.laterCallback]")
        == [decision["decisionId"]] * 2
    )
    # After the decision: a throwing callback is called at once, and push still returns.
    page.evaluate(
        """tailor.push(["onDecision", () => { throw new Error("thrown after the decision"); }]);
        tailor.push(["nonexistent"]);
        window.evenLater = null;
        tailor.push(["onDecision", (d) => { window.evenLater = d.decisionId; }]);"""
    )
    assert page.evaluate("window.evenLater") == decision["decisionId"]
    console = rec.console
    assert not [line for line in console if line.startswith(("exception:", "error:"))], console
    # data-debug: the swallowed errors are reported as console.debug, each once.
    debug = [line for line in console if line.startswith("debug: tailor:")]
    for message in (
        "thrown before the tag loaded",
        "thrown after the tag loaded",
        "thrown after the decision",
    ):
        assert sum(message in line for line in debug) == 1, console
    assert sum("TypeError" in line for line in debug) == 2, console


# --- identity and the visitor's own data ---------------------------------------------------


#: Makes the tag's session 31 minutes idle, so the next page load starts a new one.
IDLE_SESSION_JS = """(() => {
  const sid = JSON.parse(localStorage.getItem("tailor.sid"));
  sid.t = Date.now() - 31 * 60 * 1000;
  localStorage.setItem("tailor.sid", JSON.stringify(sid));
})()"""


def test_the_servers_visitor_id_and_token_are_kept_and_sent_back(
    server: Server, site: Site, rec: Recorder, page: Page
) -> None:
    page.goto(site.url("/spa"))
    [first] = wait_decided(page)
    [body] = bodies(rec, "/v1/decide")
    # a first visit has no token: the server answers with an id of its own and a token for it
    assert "visitorToken" not in body
    assert first["visitorId"] != body["visitorId"]
    assert first["visitorToken"]
    stored = local_storage(page)
    assert (stored["tailor.vid"], stored["tailor.tok"]) == (
        first["visitorId"],
        first["visitorToken"],
    )

    # The next page load, in a new session: the tag sends both, the server keeps the visitor.
    page.evaluate(IDLE_SESSION_JS)
    page.reload()
    [second] = wait_decided(page)
    again = bodies(rec, "/v1/decide")[-1]
    assert (again["visitorId"], again["visitorToken"]) == (
        first["visitorId"],
        first["visitorToken"],
    )
    assert again["sessionId"] != body["sessionId"]
    assert second["visitorId"] == first["visitorId"]
    assert second["decisionId"] != first["decisionId"]
    # one stored profile for both visits: two sessions, the second one current
    mine = server.me(first["visitorToken"])
    assert mine.status_code == 200, mine.text
    profile = mine.json()["profile"]
    assert profile["visitorId"] == first["visitorId"]
    assert profile["behavior"]["sessionCount"] == 2
    assert profile["sessionId"] == again["sessionId"]


def test_my_data_shows_what_is_stored_and_why_forget_erases_it(
    server: Server, site: Site, rec: Recorder, page: Page
) -> None:
    page.goto(site.url("/spa"))
    [decision] = wait_decided(page)
    [body] = bodies(rec, "/v1/decide")
    [answer] = answers(rec, "/v1/decide")
    token = local_storage(page)["tailor.tok"]
    assert not module_requests(rec)  # myData's module is fetched on the first call only

    mine = page.evaluate("tailor.myData()")
    assert bodies(rec, "/v1/me") == [{"visitorToken": token}]
    # ...from the server, across origins (the page is on another one): a CORS-mode import
    [module] = module_requests(rec)
    assert module.url == f"{server.url}/tag/v1/tailor-me.js"
    response = module.response()
    assert response is not None and response.status == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert mine["visitorId"] == decision["visitorId"]
    stored = mine["stored"]
    assert stored["stored"] is True
    assert stored["visitorId"] == stored["profile"]["visitorId"] == decision["visitorId"]
    assert stored["profile"]["sessionId"] == body["sessionId"]
    assert stored["profile"]["behavior"]["pageViews"] == 1
    # what the tag keeps, and why the page shows what it shows
    assert mine["local"]["session"]["id"] == body["sessionId"]
    assert mine["local"]["profile"]["pageViews"] == 1
    assert mine["reasons"]["reasons"] == answer["reasons"]
    assert mine["reasons"]["persona"] == answer["persona"]
    assert mine["reasons"]["slots"] == answer["slots"]
    assert mine["reasons"]["slots"]["hero"]["reason"]

    assert page.evaluate("tailor.forget()") is True
    assert bodies(rec, "/v1/me/forget") == [{"visitorToken": token}]
    # nothing left in the page...
    assert not [k for k in local_storage(page) if k.startswith("tailor.")]
    after = page.evaluate("tailor.myData()")
    assert len(module_requests(rec)) == 1  # imported once
    assert after["visitorId"] != decision["visitorId"]
    assert (after["stored"], after["reasons"]) == (None, None)
    assert len(bodies(rec, "/v1/me")) == 1  # no token any more: the server is not asked
    # ...nor on the server: the old token still proves the id, and nothing is stored under it
    gone = server.me(token)
    assert gone.status_code == 200, gone.text
    assert gone.json() == {"visitorId": decision["visitorId"], "profile": None, "stored": False}
    # and the log carries the erasure marker that purging the visitor's lines works from
    server.mark()
    marker = visitor_hash(decision["visitorId"])
    erasures = [
        json.loads(line)
        for path in sorted(server.events_dir.glob("events-*.jsonl"))
        for line in path.read_text().splitlines()
        if marker in line
    ]
    assert [e["kind"] for e in erasures] == ["erasure"]


def test_identify_sends_the_user_id_with_its_token(server: Server, browser: Browser) -> None:
    signed = user_token(TEST_USER_TOKEN_SECRET, "user_42")
    seen: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for user, token in (("user_42", signed), ("user_43", signed)):  # the second is forged
        with browser.new_context(viewport=VIEWPORT) as context:
            identify = f"window.tailor.push({json.dumps(['identify', user, token])});"
            rec = open_page(context, identify)
            rec.page.goto(f"{server.url}/")
            [decision] = wait_decided(rec.page)
            [body] = bodies(rec, "/v1/decide")
            seen[user] = body, decision
    for user, (body, _) in seen.items():
        assert (body["userId"], body["userToken"]) == (user, signed)
    server.mark()
    # the server keeps the signed user id, and drops the one whose token is not its own
    [signed_record] = server.records(seen["user_42"][1]["visitorId"], "decision")
    assert signed_record["userId"] == "user_42"
    [forged_record] = server.records(seen["user_43"][1]["visitorId"], "decision")
    assert forged_record.get("userId") is None


def test_the_demo_stores_my_data_and_forget_me_buttons(
    server: Server, rec: Recorder, page: Page
) -> None:
    page.goto(f"{server.url}/")
    [decision] = wait_decided(page)
    page.click("#a-mine")
    mine = wait_for(
        page,
        "document.querySelectorAll('#d-mine li').length === 3 && "
        "[...document.querySelectorAll('#d-mine li')].map((li) => li.textContent)",
    )
    assert mine[0] == f"visitor {decision['visitorId']}"
    assert mine[1].startswith("on the server: 1 sessions, 1 page views since "), mine
    page.click("#a-forget")
    done = wait_for(
        page, "document.querySelector('#d-mine li').textContent.startsWith('forgotten')"
    )
    assert done
    assert not [k for k in local_storage(page) if k.startswith("tailor.")]
    assert server.me(decision["visitorToken"]).json()["stored"] is False


def test_the_tag_and_its_module_are_served_gzipped_and_cacheable(server: Server) -> None:
    for path, kind in (
        ("/tag/v1/tailor.js", "text/javascript"),
        ("/tag/v1/tailor.js.map", "application/json"),
        ("/tag/v1/tailor-me.js", "text/javascript"),
        ("/tag/v1/tailor-me.js.map", "application/json"),
    ):
        r = httpx.get(server.url + path, headers={"accept-encoding": "gzip"}, timeout=10)
        assert r.status_code == 200, (path, r.text)
        assert r.headers["content-type"].startswith(kind), path
        assert r.headers["content-encoding"] == "gzip", path
        assert r.headers["cache-control"] == "public, max-age=3600", path
        again = httpx.get(
            server.url + path,
            headers={"accept-encoding": "gzip", "if-none-match": r.headers["etag"]},
            timeout=10,
        )
        assert again.status_code == 304, path
    # import() reads the module in CORS mode from any site's page; the tag is a classic script
    module = httpx.get(server.url + "/tag/v1/tailor-me.js", timeout=10)
    assert module.headers["access-control-allow-origin"] == "*"
    assert "export{" in module.text and "myData" in module.text
    assert "access-control-allow-origin" not in httpx.get(server.url + "/tag/v1/tailor.js").headers
