"""Shared pieces of the load tools: load-test keys, the traffic mix, request bodies, a server.

``benchmarks.locustfile`` (realistic scenarios) and ``benchmarks.run`` (capacity and latency
curve) draw decide requests from the same generated visits (``model_export.inputs.synth``: planted
personas with their devices, user agents, referrers, campaigns, time zones and behaviour) and
the same consent mix. A request body is pre-encoded once with placeholder ids and split around
them (:class:`Body`), so a load generator only joins bytes to send a fresh visitor.

``python -m benchmarks._load [--bundle B] [--workers N] [--replicas R] [--host URL[,URL...]]
-- COMMAND ...`` runs COMMAND against a load-test server: without ``--host`` it starts
``python -m server`` on a free loopback port with the load-test keys (:data:`PUBLIC_KEY` for
origin :data:`ORIGIN`, :data:`SECRET_KEY`), rate limits off, demo mode off and a temporary
event log; it passes the server's address to COMMAND as ``LOCUST_HOST`` and stops the server's
whole process group afterwards, also on Ctrl-C. With ``--replicas R`` (R > 1) it first starts
a ``redis-server`` of its own (loopback, no persistence), then R servers sharing it
(``TAILOR_REDIS_URL``, one key prefix), as replicas behind a load balancer would; COMMAND gets
every address in ``TAILOR_LOAD_HOSTS`` (comma-separated) and the first in ``LOCUST_HOST``.
At the end it prints what each server answered (from its ``/metrics``), and writes it as JSON
with ``--report FILE``. ``make load`` uses it.

May import sdk, server.security, model_export.inputs.synth and tests.redis_server; never
locust (``benchmarks.run`` must not need it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx
import msgspec
from prometheus_client.parser import text_string_to_metric_families

from model_export.inputs.synth import generate
from sdk.schema import Consent, DecideRequest
from server.security import hash_key
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BUNDLE = ROOT / "var" / "bundles" / "demo"

#: Keys of the load-test server started here. They protect nothing: the server lives for one
#: run on 127.0.0.1. Against another server set ``TAILOR_LOAD_PUBLIC_KEY`` and friends.
PUBLIC_KEY = "pk_load_0123456789abcdefghijklmnopqrstuv"
SECRET_KEY = "sk_load_0123456789abcdefghijklmnopqrstuv"
#: The site the public key is registered for; tag traffic sends it as ``Origin``.
ORIGIN = "https://shop.example.com"
#: The Redis key prefix the replicas of one load run share.
REDIS_PREFIX = "load"

#: Consent states of tag traffic: ``granted`` (personalization and storage), ``pending`` (the
#: consent banner is unanswered: the tag sends both false and holds its events) and ``gpc``
#: (Global Privacy Control: both false in the body and a ``Sec-GPC: 1`` header; no events).
CONSENT_STATES = ("granted", "pending", "gpc")
DEFAULT_CONSENT = {"granted": 0.7, "pending": 0.2, "gpc": 0.1}

_VID = "@VID@"
_SID = "@SID@"


def parse_weights(text: str, names: tuple[str, ...] = CONSENT_STATES) -> dict[str, float]:
    """``"granted=0.7,pending=0.2,gpc=0.1"`` as a dict; names left out weigh 0.

    Raises:
        ValueError: an unknown name, a negative weight, or all weights 0.
    """
    weights = dict.fromkeys(names, 0.0)
    for item in text.split(","):
        if not item.strip():
            continue
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in weights:
            raise ValueError(f"unknown name {name!r} in {text!r}; expected one of {names}")
        weights[name] = float(value)
        if weights[name] < 0:
            raise ValueError(f"negative weight for {name!r} in {text!r}")
    if sum(weights.values()) <= 0:
        raise ValueError(f"no positive weight in {text!r}")
    return weights


def consent_of(state: str) -> Consent:
    """The consent a tag sends in the given state."""
    granted = state == "granted"
    return Consent(personalization=granted, storage=granted)


def tag_headers(state: str, user_agent: str | None, origin: str = ORIGIN) -> dict[str, str]:
    """Headers of the tag's CORS-simple ``text/plain`` POST from a browser on ``origin``."""
    headers = {"content-type": "text/plain;charset=UTF-8", "origin": origin}
    if user_agent:
        headers["user-agent"] = user_agent
    if state == "gpc":
        headers["sec-gpc"] = "1"
    return headers


def backend_headers(secret_key: str = SECRET_KEY) -> dict[str, str]:
    """Headers of a backend service using the secret key (the Python SDK's remote mode)."""
    return {"authorization": f"Bearer {secret_key}", "content-type": "application/json"}


def visits(n: int, seed: int) -> list[DecideRequest]:
    """``n`` generated visits (personas, devices, referrers, behaviour), deterministic."""
    return [v.request for v in generate(n, seed=seed)]


@dataclass(frozen=True)
class Body:
    """A pre-encoded decide request split around its visitor and session ids.

    Attributes:
        head, mid, tail: ``head + visitor_id + mid + session_id + tail`` is the JSON body.
        consent: the consent state it was built for (see :data:`CONSENT_STATES`).
        backend: sent by a backend with the secret key rather than by the tag.
        path: the request path with its query (the tag's public key is in ``?key=``).
        headers: the request headers (without Host and Content-Length).
    """

    head: bytes
    mid: bytes
    tail: bytes
    consent: str
    backend: bool
    path: str
    headers: dict[str, str] = field(default_factory=dict)

    def render(self, visitor_id: str, session_id: str) -> bytes:
        """The JSON body for these ids."""
        return b"".join((self.head, visitor_id.encode(), self.mid, session_id.encode(), self.tail))


def split_body(request: DecideRequest) -> tuple[bytes, bytes, bytes]:
    """Encode ``request`` with placeholder ids and split it around them."""
    body = msgspec.json.encode(
        msgspec.structs.replace(request, visitor_id=_VID, session_id=_SID, timestamp=None)
    )
    vid, sid = _VID.encode(), _SID.encode()
    if body.count(vid) != 1 or body.count(sid) != 1 or body.index(vid) > body.index(sid):
        raise AssertionError("the id placeholders must appear once each, visitor id first")
    head, _, rest = body.partition(vid)
    mid, _, tail = rest.partition(sid)
    return head, mid, tail


def decide_bodies(
    n: int,
    *,
    seed: int = 8,
    consent: Mapping[str, float] = DEFAULT_CONSENT,
    backend_share: float = 0.2,
    public_key: str = PUBLIC_KEY,
    secret_key: str = SECRET_KEY,
) -> list[Body]:
    """A deterministic pool of ``POST /v1/decide`` requests with the traffic mix.

    Args:
        n: pool size (one generated visit each).
        seed: seed of the visits and of the mix.
        consent: weights of the consent states.
        backend_share: share sent by a backend with the secret key (``Authorization: Bearer``,
            ``application/json``); the rest come from the tag (``?key=`` public key,
            ``Origin``, ``text/plain``). A backend has no ``Sec-GPC`` header: its ``gpc``
            visits send refused consent in the body only.
    """
    rng = random.Random(seed)
    states = list(consent)
    weights = [consent[s] for s in states]
    pool = []
    for request in visits(n, seed):
        state = rng.choices(states, weights)[0]
        backend = rng.random() < backend_share
        head, mid, tail = split_body(msgspec.structs.replace(request, consent=consent_of(state)))
        if backend:
            path, headers = "/v1/decide", backend_headers(secret_key)
        else:
            path = f"/v1/decide?key={public_key}"
            headers = tag_headers(state, request.context.user_agent)
        pool.append(Body(head, mid, tail, state, backend, path, headers))
    return pool


# -- a load-test server -----------------------------------------------------------------------


def keys_config(
    public_key: str = PUBLIC_KEY,
    secret_key: str = SECRET_KEY,
    origins: Sequence[str] = (ORIGIN,),
) -> dict[str, object]:
    """A ``TAILOR_KEYS_FILE`` with one public key (for ``origins``, by default
    :data:`ORIGIN`), one secret key and every rate limit off: load tests measure the server,
    not its limits."""
    return {
        "per_key_per_minute": 0,
        "per_ip_per_minute": 0,
        "keys": [
            {
                "id": "load-tag",
                "kind": "public",
                "sha256": hash_key(public_key),
                "origins": list(origins),
            },
            {"id": "load-backend", "kind": "secret", "sha256": hash_key(secret_key)},
        ],
    }


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def machine_busy_seconds() -> float:
    """CPU time the whole machine has spent busy (not idle, not waiting for I/O), all cores."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    # guest time is already counted in user time
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def process_group(pgid: int) -> list[int]:
    """Pids of the live processes in process group ``pgid`` (Linux ``/proc``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # fields after the parenthesised command: state ppid pgrp ...
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return sorted(pids)


@dataclass
class Server:
    """A running load-test server (``python -m server`` in its own process group)."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    events_dir: Path
    workers: int
    worker_pids: set[int] = field(default_factory=set)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def rss_mib(self) -> dict[str, float]:
        """Resident memory of every process of the server (MiB), by pid, and their total."""
        sizes = {pid: _rss_kib(pid) for pid in process_group(self.process.pid)}
        out = {str(pid): round(kib / 1024, 1) for pid, kib in sizes.items() if kib is not None}
        out["total"] = round(sum(out.values()), 1)
        return out

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the server's live processes."""
        ticks = 0
        for pid in process_group(self.process.pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def event_log_size(self) -> tuple[int, int]:
        """Bytes and lines (records) the server has appended to its event log so far."""
        size = lines = 0
        for path in self.events_dir.rglob("*"):
            if path.is_file():
                with path.open("rb") as fh:
                    while chunk := fh.read(1 << 20):
                        size += len(chunk)
                        lines += chunk.count(b"\n")
        return size, lines

    def log_problems(self) -> dict[str, int]:
        """Counts of tracebacks and ERROR/WARNING lines in the server's output."""
        counts = {"tracebacks": 0, "errors": 0, "warnings": 0}
        with self.log.open("rb") as fh:
            for line in fh:
                if line.startswith(b"Traceback"):
                    counts["tracebacks"] += 1
                elif b" ERROR " in line or line.startswith(b"ERROR"):
                    counts["errors"] += 1
                elif b" WARNING " in line or line.startswith(b"WARNING"):
                    counts["warnings"] += 1
        return counts


def stop(process: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """Stop a process started with ``start_new_session=True`` and everything in its group:
    SIGTERM, then SIGKILL after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while process_group(process.pid) and time.monotonic() < deadline:
            process.poll()  # reap the leader so that it leaves the group
            time.sleep(0.05)  # polling for exit
        if not process_group(process.pid):
            break
    process.wait(timeout=5)


@contextmanager
def serve(
    bundle: Path | str,
    root: Path,
    *,
    workers: int = 1,
    port: int | None = None,
    public_key: str = PUBLIC_KEY,
    secret_key: str = SECRET_KEY,
    origins: Sequence[str] = (ORIGIN,),
    timeout: float = 90.0,
    env: Mapping[str, str] | None = None,
) -> Iterator[Server]:
    """Run ``python -m server`` on 127.0.0.1 with the load-test keys, until the block exits.

    The server gets its own process group, which is killed on the way out whatever happens.
    Readiness waits until ``/readyz`` has answered from every worker (or ``timeout``).

    Args:
        bundle: the bundle directory to serve.
        root: a directory for the keys file, the server's output and its event log.
        workers: uvicorn worker processes.
        port: the port; a free one by default.
        public_key, secret_key: the keys the server accepts.
        origins: the page origins the public key is allowed from.
        timeout: seconds to wait for readiness.
        env: more environment for the server (``TAILOR_REDIS_URL``...). Without a shared
            store, several workers keep per-worker state (``TAILOR_STATE=per-worker``, as
            before shared state existed).
    """
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    keys = root / "keys.json"
    keys.write_text(json.dumps(keys_config(public_key, secret_key, origins)))
    events = root / "events"
    log = root / "server.log"
    extra = dict(env or {})
    if workers > 1 and "TAILOR_REDIS_URL" not in extra:
        extra.setdefault("TAILOR_STATE", "per-worker")
    env = dict(
        os.environ,
        **extra,
        TAILOR_BUNDLE=str(bundle),
        TAILOR_KEYS_FILE=str(keys),
        TAILOR_EVENT_LOG_DIR=str(events),
        TAILOR_DEMO="0",
        TAILOR_TOKEN_SECRETS=secrets.token_urlsafe(32),  # keys need a visitor token secret
        # one load generator on 127.0.0.1 stands for many visitors' browsers: no per-client cap
        TAILOR_NEW_PROFILES_PER_MINUTE="0",
    )
    cmd = [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as fh:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [*cmd, "--workers", str(workers)],
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log, events, workers)
    try:
        _wait_ready(server, timeout)
        yield server
    finally:
        stop(process)


def _wait_ready(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(server.worker_pids) < server.workers:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.log.read_text()[-4000:]}")
        try:  # a new connection each time, so that every worker gets to answer
            response = httpx.get(f"{server.url}/readyz", timeout=2)
            if response.status_code == 200:
                server.worker_pids.add(int(response.headers.get("x-tailor-worker", "0")))
        except httpx.HTTPError:
            pass
        time.sleep(0.05)  # polling for readiness
    if not server.worker_pids:
        raise RuntimeError(f"server not ready in {timeout} s:\n{server.log.read_text()[-4000:]}")


@contextmanager
def serve_replicas(
    bundle: Path | str, root: Path, *, replicas: int = 2, workers: int = 1, timeout: float = 90.0
) -> Iterator[list[Server]]:
    """Run a ``redis-server`` and ``replicas`` load-test servers sharing it, until the block exits.

    Each server is :func:`serve` with ``workers`` workers, ``TAILOR_REDIS_URL`` and the key
    prefix :data:`REDIS_PREFIX`; several workers write their metrics to one
    ``PROMETHEUS_MULTIPROC_DIR`` per server, so that its ``/metrics`` counts all of them.
    Everything is stopped on the way out (servers first, then Redis), whatever happens.
    """
    with ExitStack() as stack:
        redis = RedisServer(root / "redis").start()
        stack.callback(redis.stop)
        servers = []
        for number in range(1, replicas + 1):
            home = root / f"replica-{number}"
            env = {"TAILOR_REDIS_URL": redis.url, "TAILOR_REDIS_PREFIX": REDIS_PREFIX}
            if workers > 1:
                (home / "metrics").mkdir(parents=True)
                env["PROMETHEUS_MULTIPROC_DIR"] = str(home / "metrics")
            server = serve(bundle, home, workers=workers, timeout=timeout, env=env)
            servers.append(stack.enter_context(server))
        yield servers


def traffic(url: str) -> dict[str, dict[str, int]]:
    """What the server at ``url`` has answered, from its ``/metrics``: requests by
    ``"METHOD route"`` and by status code (all its workers when it has a multiprocess
    directory, else the worker that answered the scrape)."""
    response = httpx.get(f"{url}/metrics", timeout=10)
    response.raise_for_status()
    routes: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    for family in text_string_to_metric_families(response.text):
        if family.name != "tailor_http_requests":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                labels = sample.labels
                routes[f"{labels['method']} {labels['route']}"] += int(sample.value)
                statuses[labels["status"]] += int(sample.value)
    return {"requests": dict(sorted(routes.items())), "statuses": dict(sorted(statuses.items()))}


def command_env(urls: Sequence[str]) -> dict[str, str]:
    """The environment of the load command aimed at ``urls``: the first as ``LOCUST_HOST``,
    all of them as ``TAILOR_LOAD_HOSTS``."""
    return dict(os.environ, LOCUST_HOST=urls[0], TAILOR_LOAD_HOSTS=",".join(urls))


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks._load``: run a command against load-test servers."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks._load",
        description="Run COMMAND with LOCUST_HOST (and TAILOR_LOAD_HOSTS) set to load-test "
        "servers (started here unless --host is given) and stop them afterwards.",
    )
    parser.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="servers to start; more than 1 share a redis-server started here",
    )
    parser.add_argument(
        "--host", default=None, help="use this running server (or URL,URL,... replicas) instead"
    )
    parser.add_argument("--report", default=None, help="write what each server answered here")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (after --)")
    if args.replicas < 1 or args.workers < 1:
        parser.error("--replicas and --workers must be at least 1")
    signal.signal(signal.SIGTERM, _raise_on_sigterm)  # so that the servers are stopped
    if args.host:
        urls = [u.strip().rstrip("/") for u in args.host.split(",") if u.strip()]
        return subprocess.call(command, env=command_env(urls))
    with tempfile.TemporaryDirectory(prefix="tailor-load-") as tmp, ExitStack() as stack:
        if args.replicas > 1:
            replicas = serve_replicas(
                args.bundle, Path(tmp), replicas=args.replicas, workers=args.workers
            )
            servers = stack.enter_context(replicas)
        else:
            servers = [stack.enter_context(serve(args.bundle, Path(tmp), workers=args.workers))]
        for server in servers:
            print(f"load-test server {server.url}: {len(server.worker_pids)} worker(s) ready")
        try:
            code = subprocess.call(command, env=command_env([s.url for s in servers]))
        except KeyboardInterrupt:  # Ctrl-C reached the command too: report, then stop servers
            code = 130
        report = []
        for server in servers:
            try:
                answered: dict[str, object] = dict(traffic(server.url))
            except httpx.HTTPError as exc:  # a server that died says so in its log
                answered = {"error": repr(exc)}
            problems = server.log_problems()
            print(f"server {server.url}: {answered}")
            print(f"server log: {problems}; memory (MiB): {server.rss_mib()}")
            report.append(
                {"url": server.url, "workers": server.workers, **answered, "log": problems}
            )
        if args.report:
            Path(args.report).write_text(
                json.dumps({"redis": args.replicas > 1, "servers": report}, indent=2) + "\n"
            )
        return code


if __name__ == "__main__":
    raise SystemExit(main())
