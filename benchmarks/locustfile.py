"""Locust scenarios for the Tailor decision server: browser tag traffic and backend SDK traffic.

Headless, time-bounded, against a load-test server on 127.0.0.1 (``make load`` starts one with
the load-test keys of :mod:`benchmarks._load`, runs this file and stops the server)::

    python -m benchmarks._load -- locust -f benchmarks/locustfile.py --headless \\
        --users 50 --spawn-rate 10 --run-time 60s \\
        --csv benchmarks/results/locust --html benchmarks/results/locust.html

User classes
    ``TagVisitor`` is a browser running the tag. A session is 1 + a geometric number of page
    views; each page view POSTs ``/v1/decide?key=<public key>`` as ``text/plain`` with an
    ``Origin`` (the first page view of a session decides, later ones are re-served from the
    server's visit cache), then, with granted consent, one beacon ``POST /v1/events`` with a
    pageview, impressions of the slots seen, and sometimes a click and a conversion. Visits
    come from ``model_export.inputs.synth``: planted personas with their devices and user agents,
    referrers (search, social, email campaigns, direct), time zones and behaviour. Consent is
    granted, pending (both false; the tag holds its events) or refused by Global Privacy
    Control (both false and ``Sec-GPC: 1``; no events). A visitor who granted storage keeps
    its visitor id; a share of sessions comes back under it (a returning visitor).
    ``BackendService`` is a server using the Python SDK with the secret key
    (``Authorization: Bearer``): batch decides (``POST /v1/decide/batch``, a list of up to 100
    requests, some for visitors it decided before) and, less often, server-side conversion
    events for decisions it got.

Every response is checked (``catch_response``): status, JSON shape (``decisionId``, ``slots``
covering the slots asked for, no personalization without consent, the batch's length,
``accepted`` events). The request names are ``/v1/decide (tag)``, ``/v1/events (tag)``,
``/v1/decide/batch (backend)`` and ``/v1/events (backend)``. At the end the share of returning
visitors and of tag decides served from the visit cache is logged.

Replicas
    ``TAILOR_LOAD_HOSTS`` (comma-separated URLs; ``benchmarks._load --replicas N`` sets it)
    aims the users at several server replicas sharing their state in Redis, and replaces the
    host. With ``TAILOR_LOAD_SPREAD=user`` (the default) each user keeps one replica for its
    whole life, round-robin by user number, as a load balancer with client affinity would;
    with ``request`` every request goes to the next replica in turn, as a round-robin load
    balancer without affinity would: a visitor's events then often land on another replica
    than its decide, which is what exercises the shared state. The request names stay the
    same whatever the replica; the summary logs the requests sent to each replica and the
    event beacons that went to another replica than their decide.

Locust's own options and ``LOCUST_*`` variables apply (``--users``, ``--spawn-rate``,
``--run-time``, ``--host``, ``--csv``, ``--html``). The host defaults to
http://127.0.0.1:8000, and a host that is not loopback is refused unless
``TAILOR_LOAD_ALLOW_REMOTE=1``. A headless run without ``--run-time`` stops after
``TAILOR_LOAD_MAX_RUN_TIME`` seconds, and so does each test started from the web UI.

Environment variables (default)
    TAILOR_LOAD_PUBLIC_KEY, TAILOR_LOAD_SECRET_KEY  keys (the load-test keys of benchmarks._load)
    TAILOR_LOAD_ORIGIN           Origin sent by the tag, allowed for the public key
                                 (https://shop.example.com)
    TAILOR_LOAD_HOSTS            replicas to aim at, URL,URL,... (unset: the host)
    TAILOR_LOAD_SPREAD           user (a replica per user) or request (each request to the
                                 next replica) (user)
    TAILOR_LOAD_ALLOW_REMOTE     1 to allow a non-loopback host (unset)
    TAILOR_LOAD_MAX_RUN_TIME     seconds, when no --run-time is given (60)
    TAILOR_LOAD_TAG_WEIGHT       relative number of TagVisitor users (9)
    TAILOR_LOAD_BACKEND_WEIGHT   relative number of BackendService users (1)
    TAILOR_LOAD_TAG_THINK        seconds between page views, "min,max" (2,8)
    TAILOR_LOAD_BACKEND_THINK    seconds between backend calls, "min,max" (0.5,2)
    TAILOR_LOAD_CONSENT          consent mix of new visitors (granted=0.7,pending=0.2,gpc=0.1)
    TAILOR_LOAD_RETURNING        share of sessions from a returning visitor, and of batch
                                 requests for a visitor decided before (0.3)
    TAILOR_LOAD_PAGES            mean page views per session (3)
    TAILOR_LOAD_SEEN             share of slots scrolled into view: an impression (0.8)
    TAILOR_LOAD_CLICK_RATE       clicks per impression (0.05)
    TAILOR_LOAD_CONVERSION_RATE  conversions per click (0.2)
    TAILOR_LOAD_BATCH            requests per batch decide, 1-100 (20)
    TAILOR_LOAD_SEED             seed of the generated visits (8)
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gevent
import msgspec
from locust import FastHttpUser, between, events, task
from locust.runners import WorkerRunner

# `locust -f benchmarks/locustfile.py` puts benchmarks/ first on sys.path, where sdk.py (a
# benchmark) would shadow the sdk package: import the project from the repository root.
_HERE = Path(__file__).resolve().parent
_saved_path = sys.path[:]
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]
try:
    from benchmarks import _load
finally:
    sys.path[:] = _saved_path  # locust removes the entry it added after this import

log = logging.getLogger("tailor.load")
DEFAULT_HOST = "http://127.0.0.1:8000"


def _env(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _env_range(name: str, default: str) -> tuple[float, float]:
    low, _, high = os.environ.get(name, default).partition(",")
    return float(low), float(high or low)


PUBLIC_KEY = os.environ.get("TAILOR_LOAD_PUBLIC_KEY", _load.PUBLIC_KEY)
SECRET_KEY = os.environ.get("TAILOR_LOAD_SECRET_KEY", _load.SECRET_KEY)
ORIGIN = os.environ.get("TAILOR_LOAD_ORIGIN", _load.ORIGIN)
MAX_RUN_TIME = int(_env("TAILOR_LOAD_MAX_RUN_TIME", 60))
HOSTS = [
    h.strip().rstrip("/") for h in os.environ.get("TAILOR_LOAD_HOSTS", "").split(",") if h.strip()
]
SPREAD = os.environ.get("TAILOR_LOAD_SPREAD", "user")
if SPREAD not in ("user", "request"):
    raise ValueError(f"TAILOR_LOAD_SPREAD={SPREAD!r}: expected 'user' or 'request'")
CONSENT = _load.parse_weights(
    os.environ.get("TAILOR_LOAD_CONSENT", "granted=0.7,pending=0.2,gpc=0.1")
)
RETURNING = _env("TAILOR_LOAD_RETURNING", 0.3)
PAGES = max(1.0, _env("TAILOR_LOAD_PAGES", 3))
SEEN = _env("TAILOR_LOAD_SEEN", 0.8)
CLICK_RATE = _env("TAILOR_LOAD_CLICK_RATE", 0.05)
CONVERSION_RATE = _env("TAILOR_LOAD_CONVERSION_RATE", 0.2)
BATCH = min(100, max(1, int(_env("TAILOR_LOAD_BATCH", 20))))

_STATES = list(CONSENT)
_WEIGHTS = [CONSENT[s] for s in _STATES]
_VISITS = _load.visits(1000, seed=int(_env("TAILOR_LOAD_SEED", 8)))
#: each visit pre-encoded once per consent state, split around its ids (see _load.Body)
_SPLIT = {
    state: [
        _load.split_body(msgspec.structs.replace(v, consent=_load.consent_of(state)))
        for v in _VISITS
    ]
    for state in _load.CONSENT_STATES
}
_encode = msgspec.json.encode
#: what this process saw, logged when the test stops
STATS: Counter[str] = Counter()


def _rid(rng: random.Random) -> str:
    """An id as the tag makes them: 128 random bits as four decimal numbers."""
    return "-".join(str(rng.getrandbits(32)) for _ in range(4))


def _body(state: str, visit: int, visitor_id: str, session_id: str) -> bytes:
    head, mid, tail = _SPLIT[state][visit]
    return b"".join((head, visitor_id.encode(), mid, session_id.encode(), tail))


def _decision_problem(d: Any, slots: list[str], personalized: bool | None) -> str | None:
    """What is wrong with a decision object, or None."""
    if not isinstance(d, dict):
        return "decision is not a JSON object"
    if not isinstance(d.get("decisionId"), str) or not d["decisionId"]:
        return "decision without decisionId"
    got = d.get("slots")
    if not isinstance(got, dict) or any(not isinstance(got.get(s), dict) for s in slots):
        return f"decision slots {sorted(got) if isinstance(got, dict) else got!r} miss {slots}"
    if personalized is False and d.get("personalized"):
        return "personalized without consent"
    return None


def _json_or_fail(response: Any, status: int) -> Any:
    """The JSON body of a response with this status, or None after marking it failed."""
    if response.status_code != status:
        response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
        return None
    try:
        return response.json()
    except ValueError:
        response.failure(f"not JSON: {(response.text or '')[:200]}")
        return None


def _check_accepted(response: Any, n: int) -> None:
    body = _json_or_fail(response, 202)
    if body is None:
        return
    if not isinstance(body, dict) or body.get("accepted") != n:
        response.failure(f"expected {{'accepted': {n}}}, got {body!r}")
    else:
        response.success()


#: user numbers and request numbers of this process, for the round robin over the replicas
_user_numbers = itertools.count()
_request_numbers = itertools.count()


class _Client(FastHttpUser):
    """A user of one replica (``TAILOR_LOAD_SPREAD=user``) or of each in turn (``request``)."""

    abstract = True
    host = HOSTS[0] if HOSTS else DEFAULT_HOST

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.hosts = HOSTS or [self.host]
        self.replica = self.hosts[next(_user_numbers) % len(self.hosts)]
        self.client.base_url = self.replica

    def url(self, path: str) -> str:
        """Where the next request goes: ``path`` on this user's replica, or on the next one."""
        if SPREAD == "request" and len(self.hosts) > 1:
            self.replica = self.hosts[next(_request_numbers) % len(self.hosts)]
            STATS[f"requests to {self.replica}"] += 1
            return self.replica + path
        STATS[f"requests to {self.replica}"] += 1
        return path


class TagVisitor(_Client):
    """A browser with the tag: page views decide, granted consent sends event beacons."""

    weight = int(_env("TAILOR_LOAD_TAG_WEIGHT", 9))
    wait_time = between(*_env_range("TAILOR_LOAD_TAG_THINK", "2,8"))

    def on_start(self) -> None:
        self.rng = random.Random()
        self.stored_vid: str | None = None  # localStorage tailor.vid (storage consent only)
        self.visit = self.rng.randrange(len(_VISITS))
        self.pages_left = 0
        self.first_page = True

    def _new_session(self) -> None:
        rng = self.rng
        if self.stored_vid is not None and rng.random() < RETURNING:
            self.vid, self.consent = self.stored_vid, "granted"  # consent was stored too
            STATS["returning sessions"] += 1
        else:  # a new browser (or one that stored nothing): a new visitor
            self.visit = rng.randrange(len(_VISITS))
            self.vid, self.consent = _rid(rng), rng.choices(_STATES, _WEIGHTS)[0]
        self.stored_vid = self.vid if self.consent == "granted" else None
        self.sid = _rid(rng)
        # 1 + geometric page views: mean PAGES
        self.pages_left = 1
        while rng.random() > 1 / PAGES:
            self.pages_left += 1
        self.first_page = True
        STATS["sessions"] += 1

    @task
    def page_view(self) -> None:
        if self.pages_left <= 0:
            self._new_session()
        self.pages_left -= 1
        request = _VISITS[self.visit]
        granted = self.consent == "granted"
        started = time.perf_counter()
        with self.client.post(
            self.url(f"/v1/decide?key={PUBLIC_KEY}"),
            data=_body(self.consent, self.visit, self.vid, self.sid),
            headers=_load.tag_headers(self.consent, request.context.user_agent, ORIGIN),
            name="/v1/decide (tag)",
            catch_response=True,
        ) as response:
            decision = _json_or_fail(response, 200)
            if decision is None:
                return
            problem = _decision_problem(decision, request.slots, None if granted else False)
            if problem:
                response.failure(problem)
                return
            response.success()
            STATS["tag decides"] += 1
            STATS["tag cache hits"] += response.headers.get("x-tailor-cache") == "hit"
        decided_by = self.replica
        if granted:  # pending consent holds events, a refusal drops them
            self._beacon(decision, (time.perf_counter() - started) * 1000)
            STATS["beacons"] += 1
            STATS["beacons to another replica"] += self.replica != decided_by
        self.first_page = False

    def _beacon(self, decision: dict[str, Any], waited_ms: float) -> None:
        """The events of one page view, sent in one batch as the tag does on page hide."""
        rng = self.rng
        # a public key's events: the decision's visitor, an event id each, one conversion
        vid, decision_id = decision["visitorId"], decision["decisionId"]
        ids = {"visitorId": vid, "sessionId": self.sid, "decisionId": decision_id}
        converted = False
        properties = (
            {"timeToDecisionMs": round(waited_ms), "slotsHiddenMs": round(waited_ms)}
            if self.first_page
            else {}
        )
        batch: list[dict[str, Any]] = [{"type": "pageview", **ids, "properties": properties}]
        for slot, chosen in decision["slots"].items():
            if rng.random() >= SEEN:
                continue
            shown = {**ids, "slot": slot, "variantId": chosen.get("variantId")}
            shown["offerId"] = chosen.get("offerId")
            batch.append({"type": "impression", **shown})
            if rng.random() < CLICK_RATE:
                batch.append({"type": "click", **shown})
                if not converted and rng.random() < CONVERSION_RATE:
                    converted = True
                    value = round(rng.uniform(15, 250), 2)
                    batch.append({"type": "conversion", **shown, "value": value, "currency": "EUR"})
        for event in batch:
            event["eventId"] = _rid(rng)
        consent = {"personalization": True, "storage": True}
        body = {"events": batch, "consent": consent, "visitorToken": decision.get("visitorToken")}
        with self.client.post(
            self.url(f"/v1/events?key={PUBLIC_KEY}"),
            data=_encode({k: v for k, v in body.items() if v is not None}),
            headers=_load.tag_headers("granted", _VISITS[self.visit].context.user_agent, ORIGIN),
            name="/v1/events (tag)",
            catch_response=True,
        ) as response:
            _check_accepted(response, len(batch))


class BackendService(_Client):
    """A backend with the SDK and the secret key: batch decides, server-side conversions."""

    weight = int(_env("TAILOR_LOAD_BACKEND_WEIGHT", 1))
    wait_time = between(*_env_range("TAILOR_LOAD_BACKEND_THINK", "0.5,2"))

    def on_start(self) -> None:
        self.rng = random.Random()
        self.known: list[tuple[str, int]] = []  # (visitor id, visit) decided before
        self.recent: list[dict[str, Any]] = []  # decisions to send conversions for

    @task(4)
    def batch_decide(self) -> None:
        rng = self.rng
        wanted: list[tuple[bool, list[str]]] = []
        bodies = []
        for _ in range(BATCH):
            if self.known and rng.random() < RETURNING:
                vid, visit = rng.choice(self.known)
            else:
                vid, visit = _rid(rng), rng.randrange(len(_VISITS))
                if len(self.known) < 1000:
                    self.known.append((vid, visit))
            # a backend has no Sec-GPC header: refused consent travels in the body
            granted = rng.random() < CONSENT["granted"] / sum(_WEIGHTS)
            bodies.append(_body("granted" if granted else "pending", visit, vid, _rid(rng)))
            wanted.append((granted, _VISITS[visit].slots))
        with self.client.post(
            self.url("/v1/decide/batch"),
            data=b"[" + b",".join(bodies) + b"]",
            headers=_load.backend_headers(SECRET_KEY),
            name="/v1/decide/batch (backend)",
            catch_response=True,
        ) as response:
            decisions = _json_or_fail(response, 200)
            if decisions is None:
                return
            if not isinstance(decisions, list) or len(decisions) != len(bodies):
                response.failure(f"expected a list of {len(bodies)} decisions")
                return
            for d, (granted, slots) in zip(decisions, wanted, strict=True):
                problem = _decision_problem(d, slots, None if granted else False)
                if problem:
                    response.failure(problem)
                    return
            response.success()
            self.recent = [d for d, (granted, _) in zip(decisions, wanted, strict=True) if granted]

    @task(1)
    def conversions(self) -> None:
        """Orders confirmed on the backend, reported against the decisions that led to them."""
        if not self.recent:
            self.batch_decide()
            return
        batch = []
        for d in self.rng.sample(self.recent, min(3, len(self.recent))):
            slot, chosen = next(iter(d["slots"].items()))
            batch.append(
                {
                    "type": "conversion",
                    "visitorId": d["visitorId"],
                    "decisionId": d["decisionId"],
                    "slot": slot,
                    "variantId": chosen.get("variantId"),
                    "offerId": chosen.get("offerId"),
                    "value": round(self.rng.uniform(15, 250), 2),
                    "currency": "EUR",
                }
            )
        with self.client.post(
            self.url("/v1/events"),
            data=_encode({"events": batch}),
            headers=_load.backend_headers(SECRET_KEY),
            name="/v1/events (backend)",
            catch_response=True,
        ) as response:
            _check_accepted(response, len(batch))


# -- guards and the summary ------------------------------------------------------------------


def is_loopback(url: str) -> bool:
    """Whether ``url`` names this machine (localhost, 127.0.0.0/8, ::1)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_cap: gevent.Greenlet | None = None


@events.init.add_listener
def _guard(environment: Any, **_: Any) -> None:
    """Refuse a remote host; bound a headless run that has no ``--run-time``."""
    hosts = [environment.host] if environment.host else [u.host for u in environment.user_classes]
    hosts += HOSTS
    remote = [h for h in hosts if h and not is_loopback(h)]
    if remote and os.environ.get("TAILOR_LOAD_ALLOW_REMOTE") != "1":
        log.error("refusing to load-test %s: set TAILOR_LOAD_ALLOW_REMOTE=1 to allow it", remote)
        sys.exit(2)
    options = environment.parsed_options
    if options is not None and options.headless and not options.run_time:
        options.run_time = MAX_RUN_TIME
        log.warning("no --run-time given: stopping after %d s", MAX_RUN_TIME)


@events.test_start.add_listener
def _start_cap(environment: Any, **_: Any) -> None:
    """A test started from the web UI stops after ``TAILOR_LOAD_MAX_RUN_TIME`` seconds."""
    global _cap
    options = environment.parsed_options
    runner = environment.runner
    if options is None or options.headless or runner is None or isinstance(runner, WorkerRunner):
        return
    _cap = gevent.spawn_later(MAX_RUN_TIME, runner.stop)


@events.test_stop.add_listener
def _summary(environment: Any, **_: Any) -> None:
    global _cap
    if _cap is not None:
        _cap.kill(block=False)
        _cap = None
    if STATS["sessions"] or STATS["tag decides"]:
        log.info(
            "tag traffic: %d sessions, %.0f%% from returning visitors; %d decides, %.0f%% served "
            "from the server's visit cache",
            STATS["sessions"],
            100 * STATS["returning sessions"] / max(1, STATS["sessions"]),
            STATS["tag decides"],
            100 * STATS["tag cache hits"] / max(1, STATS["tag decides"]),
        )
    replicas = {
        k.removeprefix("requests to "): v for k, v in STATS.items() if k.startswith("requests to ")
    }
    if len(replicas) > 1:
        log.info(
            "replicas (spread by %s): requests sent %s; %d of %d event beacons went to another "
            "replica than their decide",
            SPREAD,
            replicas,
            STATS["beacons to another replica"],
            STATS["beacons"],
        )
