"""Soak test of the decision server: errors, latency and memory under a steady load.

``python -m benchmarks.soak [--workers N] [--duration S] [--rate R | --fraction F] [--sample S]
[--bundle DIR] [--out DIR] [--quick] [--state memory|redis]`` starts ``python -m server``
exactly as :mod:`benchmarks.run` does (load-test keys, rate limits off, a temporary event log, N
uvicorn workers, default one per CPU, on 127.0.0.1; visitor state in each worker, or with
``--state redis`` in a ``redis-server`` started for the run, shared by the workers), then:

1. checks that every kind of request in the mix gets a decision and warms up (5 s of wrk);
2. unless ``--rate`` is given, finds the maximum decide throughput with a short ``wrk`` ladder
   (8, 32 and 128 connections, 10 s each; the best step without errors) and aims at
   ``--fraction`` of it (default 0.7); then rests 5 s, so that the ladder's queue drains;
3. sends ``POST /v1/decide`` at that rate for ``--duration`` seconds (default 600) with an
   open-loop pacer, without a pause: send times are scheduled evenly for the whole run, and each
   request belongs to the window (``--sample`` seconds, default 10) of its scheduled send time.
   At every window boundary the pacer reads the resident memory (``VmRSS``) of every process in
   the server's process group (the uvicorn master and its workers) and their CPU time;
4. writes ``soak.json`` and ``soak.md`` to ``--out`` (default ``benchmarks/results``): the
   configuration, the machine, one row per window (requests sent, errors, p50/p99 latency, RSS
   of every server process and their total), the totals, and the memory verdict.

The pacer is :func:`benchmarks.run.pace` made continuous: the same request source
(:class:`benchmarks.run.RequestSource`, fresh visitors plus 30 % repeated visits), the same
keep-alive connections (64), and latency counted from each request's *scheduled* send time, so
a stalled server cannot hide behind a waiting client. Errors are socket errors, non-2xx answers,
2xx answers without a decision, and requests still unanswered 10 s after the last send.

**Memory verdict.** The RSS baseline is the total at the start of the soak (the end of the
warm-up, after the ladder); the slope is the least-squares fit of the total RSS against time
over the samples of the second half of the run (the first half lets per-process caches fill up
to their bounds). ``growth`` is true when that slope exceeds both 1 % of the baseline per
10 minutes and 1 MiB per 10 minutes (:func:`memory_verdict`). The exit code is 0 whenever the
run completed, whatever the verdict; it is nonzero when the harness itself failed.

Every phase is time-bounded and an overall deadline (:func:`deadline_s`) stops a run that
hangs; the server's whole process group is killed on the way out, also on Ctrl-C or SIGTERM.
``--quick`` (smoke tests) uses a smaller request pool, a 1-second warm-up and a two-step,
2-second ladder, and writes nothing unless ``--out`` is given.

May import benchmarks.run and benchmarks._load; never locust.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
import uuid
from array import array
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from benchmarks._load import (
    DEFAULT_BUNDLE,
    Body,
    Server,
    _rss_kib,
    decide_bodies,
    machine_busy_seconds,
    process_group,
    serve,
)
from benchmarks.run import (
    QUICK_LADDER,
    PacedConnection,
    PacedResult,
    RequestSource,
    Step,
    _best,
    _check_mix,
    _mix,
    _step,
    decide_script,
    machine,
    publish,
    report_head,
    run_wrk,
    summarize,
)
from benchmarks.state import STATES, state_backend

REPORT_VERSION = 1
#: wrk ladder (connections) and seconds per step used to find the maximum decide throughput.
LADDER = (8, 32, 128)
LADDER_STEP_S = 10.0
WARMUP_S = 5.0
#: Seconds of rest before the soak, so that requests queued by the ladder's last step drain.
SETTLE_S = 5.0
#: Seconds the pacer waits for answers after the last scheduled send.
GRACE_S = 10.0
#: ``growth`` is true when the second-half RSS slope exceeds both of these, per 10 minutes.
GROWTH_SHARE_PER_10_MIN = 0.01
GROWTH_FLOOR_KIB_PER_10_MIN = 1024.0
GROWTH_RULE = (
    "growth = least-squares slope of the total RSS over the second half of the run > "
    "max(1 % of the RSS at the start of the soak, 1 MiB) per 10 minutes"
)


class DeadlineExceeded(RuntimeError):
    """Raised (from a SIGALRM handler) when the whole run exceeds its deadline."""


# -- memory -------------------------------------------------------------------------------------


def rss_kib(server: Server) -> dict[str, int]:
    """Resident memory (KiB) of every live process of the server, by pid, and ``total``."""
    sizes = {pid: _rss_kib(pid) for pid in process_group(server.process.pid)}
    out = {str(pid): kib for pid, kib in sizes.items() if kib is not None}
    out["total"] = sum(out.values())
    return out


def slope_per_minute(points: Sequence[tuple[float, float]]) -> tuple[float, float | None]:
    """Least-squares slope of ``(seconds, value)`` points, per minute, and its standard error
    (``None`` with fewer than three points).

    Raises:
        ValueError: fewer than two distinct times.
    """
    n = len(points)
    ts = [t / 60.0 for t, _ in points]
    ys = [y for _, y in points]
    if len(set(ts)) < 2:
        raise ValueError(f"a slope needs two distinct times, got {points}")
    t_mean, y_mean = sum(ts) / n, sum(ys) / n
    sxx = sum((t - t_mean) ** 2 for t in ts)
    slope = sum((t - t_mean) * (y - y_mean) for t, y in zip(ts, ys, strict=True)) / sxx
    if n < 3:
        return slope, None
    residuals = sum((y - y_mean - slope * (t - t_mean)) ** 2 for t, y in zip(ts, ys, strict=True))
    return slope, math.sqrt(residuals / (n - 2) / sxx)


def memory_verdict(samples: Sequence[tuple[float, int]], duration_s: float) -> dict[str, Any]:
    """The memory verdict from ``(seconds since the soak started, total RSS KiB)`` samples.

    The first sample is the baseline (the start of the soak). The slope is fitted over the
    samples at or after half the duration, or over the last two samples when fewer fall there.
    """
    start, end = samples[0][1], samples[-1][1]
    half = [(t, float(kib)) for t, kib in samples if t >= duration_s / 2 - 1e-6]
    if len(half) < 2:
        half = [(t, float(kib)) for t, kib in samples[-2:]]
    slope, stderr = slope_per_minute(half)
    threshold = max(GROWTH_SHARE_PER_10_MIN * start, GROWTH_FLOOR_KIB_PER_10_MIN) / 10
    return {
        "rss_start_kib": start,
        "rss_end_kib": end,
        "rss_change_kib": end - start,
        "rss_change_share": round((end - start) / start, 4) if start else None,
        "rss_max_kib": max(kib for _, kib in samples),
        "slope_kib_per_min": round(slope, 1),
        "slope_stderr_kib_per_min": None if stderr is None else round(stderr, 1),
        "slope_from_s": round(half[0][0], 1),
        "slope_to_s": round(half[-1][0], 1),
        "slope_points": len(half),
        "threshold_kib_per_min": round(threshold, 1),
        "rule": GROWTH_RULE,
        "growth": slope > threshold,
    }


# -- the continuous, windowed pacer -------------------------------------------------------------


@dataclass
class Window:
    """The requests scheduled in one window of the soak, and the probe taken at its end."""

    index: int
    start_s: float
    end_s: float
    result: PacedResult
    pending: int
    summary: dict[str, Any] | None = None
    probe: dict[str, Any] | None = None
    printed: bool = False


@dataclass
class SoakResult:
    """What :func:`soak_pace` saw: the windows, the probe at the start, all latencies."""

    windows: list[Window]
    start_probe: dict[str, Any]
    latency: array[float] = field(default_factory=lambda: array("d"))
    service: array[float] = field(default_factory=lambda: array("d"))


def _close(window: Window, soak: SoakResult) -> None:
    """Summarize a window whose requests are all answered or failed, and free its lists."""
    r = window.result
    r.unfinished = r.scheduled - r.completed - r.errors
    r.wall_s = window.end_s - window.start_s
    window.summary = summarize(1.0, r)  # its "fraction" and client CPU are not used here
    soak.latency.extend(r.latency)
    soak.service.extend(r.service)
    r.latency.clear()
    r.service.clear()


async def soak_pace(
    host: str,
    port: int,
    source: Callable[[], bytes],
    *,
    rate: float,
    duration: float,
    sample: float,
    probe: Callable[[float], dict[str, Any]],
    connections: int = 64,
    grace: float = GRACE_S,
    progress: Callable[[Window, SoakResult], None] | None = None,
) -> SoakResult:
    """Send ``rate`` requests a second for ``duration`` seconds, open loop, in windows.

    As :func:`benchmarks.run.pace`, but continuous for the whole duration: requests belong to
    the ``sample``-second window of their scheduled send time, and ``probe(seconds since the
    start)`` is called at the start and at the end of every window (inline: its cost, a few
    milliseconds, delays sends and counts in their latency). Stops ``grace`` seconds after the
    last scheduled send at the latest; requests still open then are ``unfinished``.

    Raises:
        ValueError: a window would hold no request (``rate * sample < 1``).
    """
    if rate * sample < 1:
        raise ValueError(f"rate {rate}/s x sample {sample} s leaves windows without requests")
    n = max(1, math.ceil(duration / sample - 1e-9))
    bounds = [min(duration, k * sample) for k in range(n + 1)]
    total = max(1, int(rate * duration))
    firsts = [min(total, math.ceil(b * rate - 1e-9)) for b in bounds[:-1]] + [total]
    windows = [
        Window(
            index=k,
            start_s=bounds[k],
            end_s=bounds[k + 1],
            result=PacedResult(target_per_s=rate, scheduled=firsts[k + 1] - firsts[k]),
            pending=firsts[k + 1] - firsts[k],
        )
        for k in range(n)
    ]
    queue: asyncio.Queue[tuple[float, int] | None] = asyncio.Queue()
    clock = time.perf_counter
    soak = SoakResult(windows=windows, start_probe=probe(0.0))

    def finished(k: int) -> None:
        window = windows[k]
        window.pending -= 1
        if window.pending == 0:
            _close(window, soak)
            if progress:
                progress(window, soak)

    async def connection() -> None:
        conn = PacedConnection(host, port)
        while (item := await queue.get()) is not None:
            intended, k = item
            await conn.send(source(), intended, windows[k].result)
            finished(k)
        conn.close()

    workers = [asyncio.ensure_future(connection()) for _ in range(connections)]
    start = clock() + 0.05
    queued = current = 0  # requests queued so far; the window they are in
    boundary = 1  # the next window end to probe at

    def probe_due(now: float) -> None:
        nonlocal boundary
        while boundary <= n and now >= start + bounds[boundary]:
            window = windows[boundary - 1]
            window.probe = probe(clock() - start)
            boundary += 1
            if progress:
                progress(window, soak)

    while queued < total:
        now = clock()
        due = min(total, int((now - start) * rate) + 1)
        while queued < due:
            while queued >= firsts[current + 1]:
                current += 1
            queue.put_nowait((start + queued / rate, current))
            queued += 1
        probe_due(now)
        # millisecond timer ticks, as in benchmarks.run.pace: requests due within a tick leave
        # together (up to 1 ms late, counted in their latency)
        await asyncio.sleep(max(0.001, start + queued / rate - clock()))
    while boundary <= n:
        await asyncio.sleep(max(0.0, start + bounds[boundary] - clock()))
        probe_due(clock())
    for _ in workers:
        queue.put_nowait(None)
    _, pending = await asyncio.wait(workers, timeout=grace)
    for task in pending:
        task.cancel()
    for window in windows:
        if window.summary is None:
            _close(window, soak)
            if progress:
                progress(window, soak)
    return soak


#: Signals that stop a soak: the loop cancels the pacer, then the Python handler's exception
#: (SystemExit, DeadlineExceeded) is raised outside the loop, where it unwinds cleanly.
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGALRM)


async def _soak_until_signal(
    pacer: Callable[[], Awaitable[SoakResult]], caught: list[int]
) -> SoakResult | None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    handlers = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}

    def stop(signum: int) -> None:
        caught.append(signum)
        task.cancel()

    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, stop, sig)
    try:
        return await pacer()
    except asyncio.CancelledError:
        if not caught:
            raise  # Ctrl-C: asyncio.Runner turns it into KeyboardInterrupt
        return None
    finally:
        for sig, handler in handlers.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, handler)


def run_soak(url: str, source: Callable[[], bytes], **kwargs: Any) -> SoakResult:
    """:func:`soak_pace` on a fresh event loop (uvloop when installed).

    The collector stays on (a soak is too long to pause it) but the objects that exist before
    the run are frozen out of its way. SIGTERM and SIGALRM stop the pacer and then call their
    Python handlers outside the loop.
    """
    host, port = url.removeprefix("http://").rsplit(":", 1)
    caught: list[int] = []
    coro = _soak_until_signal(lambda: soak_pace(host, int(port), source, **kwargs), caught)
    gc.collect()
    gc.freeze()
    try:
        try:
            import uvloop
        except ImportError:
            result = asyncio.run(coro)
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                result = runner.run(coro)
    finally:
        gc.unfreeze()
    if result is None:
        signal.raise_signal(caught[0])  # the Python handler raises its exception here
        raise RuntimeError(f"the soak was stopped by signal {caught[0]}")
    return result


# -- the run ------------------------------------------------------------------------------------


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _prober(server: Server) -> Callable[[float], dict[str, Any]]:
    def probe(t: float) -> dict[str, Any]:
        return {
            "t_s": round(t, 3),
            "rss_kib": rss_kib(server),
            "server_cpu_s": server.cpu_seconds(),
            "busy_s": machine_busy_seconds(),
            "client_cpu_s": _own_cpu_seconds(),
        }

    return probe


def _cores(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """Average cores busy between two probes: the server, this pacer, the whole machine, and
    everything else (the noise of a shared host)."""
    wall = after["t_s"] - before["t_s"]
    used = {
        name: max(0.0, after[key] - before[key]) / wall if wall > 0 else 0.0
        for name, key in (
            ("server", "server_cpu_s"),
            ("client", "client_cpu_s"),
            ("machine", "busy_s"),
        )
    }
    used["other"] = max(0.0, used["machine"] - used["server"] - used["client"])
    return {f"{name}_cores": round(value, 2) for name, value in used.items()}


_SUMMARY_KEYS = (
    "achieved_per_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "service_p50_ms",
    "service_p99_ms",
    "cache_hit_share",
)


def _window_row(window: Window, before: dict[str, Any]) -> dict[str, Any]:
    s, r, p = window.summary or {}, window.result, window.probe or before
    invalid = r.completed - r.ok - r.non_2xx
    return {
        "index": window.index,
        "start_s": round(window.start_s, 3),
        "end_s": round(window.end_s, 3),
        "sent": r.scheduled,
        "ok": r.ok,
        "errors": r.errors + r.non_2xx + invalid + r.unfinished,
        "socket_errors": r.errors,
        "non_2xx": r.non_2xx,
        "invalid": invalid,
        "unfinished": r.unfinished,
        "reconnects": r.reconnects,
        **{key: s.get(key, 0.0) for key in _SUMMARY_KEYS},
        "probe_s": p["t_s"],
        "rss_kib": p["rss_kib"],
        **_cores(before, p),
    }


def _print_window(window: Window, soak: SoakResult) -> None:
    if window.printed or window.summary is None or window.probe is None:
        return
    window.printed = True
    before = soak.windows[window.index - 1].probe if window.index else soak.start_probe
    row = _window_row(window, before or soak.start_probe)
    print(
        f"  {row['end_s']:>7.0f} s  sent {row['sent']:>7}  errors {row['errors']:<3} "
        f"p50 {row['p50_ms']:6.2f}  p99 {row['p99_ms']:7.2f} ms  "
        f"server {row['server_cores']:.2f} cores  RSS {row['rss_kib']['total'] / 1024:7.1f} MiB",
        flush=True,
    )


def _ladder(server: Server, script: Path, ladder: Sequence[int], step_s: float) -> list[Step]:
    steps = []
    tag = f"s{uuid.uuid4().hex[:8]}"
    for connections in ladder:
        raw = run_wrk(
            f"{server.url}/v1/decide",
            script,
            connections=connections,
            threads=1,
            duration=step_s,
            run_tag=f"{tag}c{connections}",
        )
        step = _step("decide", connections, raw)
        steps.append(step)
        print(
            f"  decide c={connections:<4} {step.requests_per_s:>9.0f}/s  "
            f"p50 {step.p50_ms:6.2f} ms  p99 {step.p99_ms:7.2f} ms  "
            f"errors {step.socket_errors}  non-2xx {step.non_2xx}",
            flush=True,
        )
    return steps


def _role(server: Server, pid: int) -> str:
    """``worker`` (answered ``/readyz``), ``master`` (uvicorn's supervisor), or ``other: ...``
    (such as multiprocessing's resource tracker) with the end of its command line."""
    if pid in server.worker_pids:
        return "worker"
    if pid == server.process.pid:
        return "master"
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        cmd = "?"
    return (
        "other: multiprocessing resource tracker"
        if "resource_tracker" in cmd
        else f"other: {cmd[-60:]}"
    )


def _process_changes(probes: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Processes that left or joined the server's group between consecutive probes (a worker
    that died and was replaced, for instance)."""
    changes = []
    for before, after in pairwise(probes):
        old = set(before["rss_kib"]) - {"total"}
        new = set(after["rss_kib"]) - {"total"}
        if old != new:
            changes.append(
                {"t_s": after["t_s"], "gone": sorted(old - new), "new": sorted(new - old)}
            )
    return changes


def _totals(rows: Sequence[dict[str, Any]], soak: SoakResult, duration: float) -> dict[str, Any]:
    keys = ("sent", "ok", "errors", "socket_errors", "non_2xx", "invalid", "unfinished")
    totals: dict[str, Any] = {key: sum(row[key] for row in rows) for key in keys}
    totals["reconnects"] = sum(row["reconnects"] for row in rows)
    totals["requests"] = totals["sent"]
    totals["achieved_per_s"] = round(len(soak.latency) / duration, 1)
    lat, svc = sorted(soak.latency), sorted(soak.service)
    for name, values in (("", lat), ("service_", svc)):
        for p in (50, 99, 99.9):
            rank = max(1, math.ceil(len(values) * p / 100))
            key = f"{name}p{str(p).replace('.', '_')}_ms"
            totals[key] = round(values[rank - 1] * 1000, 2) if values else 0.0
    totals["max_ms"] = round(lat[-1] * 1000, 2) if lat else 0.0
    totals["worst_window_p99_ms"] = max((row["p99_ms"] for row in rows), default=0.0)
    return totals


def _verdict(
    probes: Sequence[dict[str, Any]], totals: dict[str, Any], log: dict[str, int], duration: float
) -> dict[str, Any]:
    """The memory verdict plus the errors, process changes and server log; ``ok`` when there
    is nothing to report."""
    verdict = memory_verdict([(p["t_s"], p["rss_kib"]["total"]) for p in probes], duration)
    changes = _process_changes(probes)
    verdict.update(
        errors=totals["errors"],
        requests=totals["requests"],
        process_changes=changes,
        server_log=log,
    )
    verdict["ok"] = bool(
        totals["errors"] == 0
        and not verdict["growth"]
        and not changes
        and log["tracebacks"] == 0
        and log["errors"] == 0
    )
    return verdict


def measure(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """The whole run; returns the report."""
    bodies: list[Body] = decide_bodies(200 if args.quick else 2000, seed=args.seed)
    script = tmp / "decide.lua"
    script.write_text(decide_script(bodies, args.repeat))
    ladder, step_s = (QUICK_LADDER, 2.0) if args.quick else (LADDER, LADDER_STEP_S)
    warm, settle = (1.0, 0.5) if args.quick else (WARMUP_S, SETTLE_S)
    info = machine()
    manifest = json.loads((Path(args.bundle) / "manifest.json").read_text())
    started = datetime.now(UTC)
    with (
        state_backend(args.state, tmp, args.workers) as (env, _),
        serve(args.bundle, tmp / "server", workers=args.workers, env=env) as server,
    ):
        try:
            memory: dict[str, Any] = {"ready": rss_kib(server)}
            _check_mix(server, bodies)
            print(f"server {server.url}, {len(server.worker_pids)} worker(s); warming up")
            run_wrk(
                f"{server.url}/v1/decide",
                script,
                connections=8,
                threads=1,
                duration=warm,
                run_tag=f"w{uuid.uuid4().hex[:8]}",
            )
            memory["after_warmup"] = rss_kib(server)
            ladder_info: dict[str, Any] | None = None
            if args.rate is None:
                print(f"ladder over {ladder} connections, {step_s:g} s each", flush=True)
                steps = _ladder(server, script, ladder, step_s)
                best = _best(steps)
                rate = best.requests_per_s * args.fraction
                ladder_info = {
                    "max_per_s": best.requests_per_s,
                    "at_connections": best.connections,
                    "step_s": step_s,
                    "steps": [vars(s) for s in steps],
                }
            else:
                rate = args.rate
            time.sleep(settle)  # let the ladder's queue drain before the soak
            print(
                f"soak: {rate:,.0f} decides/s for {args.duration:g} s, "
                f"{args.sample:g}-second windows",
                flush=True,
            )
            source = RequestSource(
                bodies, server.url.removeprefix("http://"), args.repeat, seed=args.seed
            )
            soak = run_soak(
                server.url,
                source,
                rate=rate,
                duration=args.duration,
                sample=args.sample,
                probe=_prober(server),
                connections=args.pacer_connections,
                progress=_print_window,
            )
            memory["end"] = rss_kib(server)  # after the drain
            log_bytes, log_records = server.event_log_size()
            log = server.log_problems()
            worker_pids_seen = len(server.worker_pids)
            backend = httpx.get(f"{server.url}/readyz", timeout=10).json()["state"]["backend"]
            probes = [soak.start_probe, *(w.probe for w in soak.windows if w.probe)]
            seen = sorted({int(p) for pr in probes for p in pr["rss_kib"] if p != "total"})
            roles = {str(pid): _role(server, pid) for pid in seen}
        finally:  # the server's teardown is bounded by itself: let nothing interrupt it
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    rows = [_window_row(w, probes[i]) for i, w in enumerate(soak.windows) if w.probe is not None]
    memory["start"] = soak.start_probe["rss_kib"]
    memory["processes"] = roles
    totals = _totals(rows, soak, args.duration)
    totals["cpu"] = _cores(probes[0], probes[-1])
    verdict = _verdict(probes, totals, log, float(args.duration))
    return {
        **report_head(REPORT_VERSION, started, info),
        "kind": "soak",
        "config": {
            "workers": args.workers,
            "state": args.state,
            "duration_s": args.duration,
            "sample_s": args.sample,
            "windows": len(soak.windows),
            "rate_per_s": round(rate, 1),
            "rate_from": "ladder" if args.rate is None else "--rate",
            "fraction": args.fraction if args.rate is None else None,
            "quick": args.quick,
            "warmup_s": warm,
            "settle_s": settle,
            "pacer_connections": args.pacer_connections,
            "repeat_share": args.repeat,
            "deadline_s": args.deadline,
            "bundle": manifest.get("modelVersion"),
            "mix": _mix(bodies),
            "body_bytes_mean": round(
                sum(len(b.render("v-x", "s-x")) for b in bodies) / len(bodies)
            ),
        },
        "ladder": ladder_info,
        "windows": rows,
        "totals": totals,
        "memory_kib": memory,
        "verdict": verdict,
        "server": {
            "workers": args.workers,
            "worker_pids_seen": worker_pids_seen,
            "state_backend": backend,
            "event_log_mib": round(log_bytes / 1024**2, 1),
            "event_log_records": log_records,
            "log": log,
        },
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


# -- the report ---------------------------------------------------------------------------------


#: How the report names each ``--state``.
_STATE_TEXT = {
    "memory": "in each worker",
    "redis": "in a loopback redis-server shared by the workers",
}


def _mib(kib: float) -> str:
    return f"{kib / 1024:,.1f}"


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown."""
    m, c, t, v = report["machine"], report["config"], report["totals"], report["verdict"]
    mem = report["memory_kib"]
    versions = ", ".join(f"{k} {val}" for k, val in m["versions"].items() if val)
    dirty = " (uncommitted changes)" if m.get("git_dirty") else ""
    if report["ladder"]:
        lad = report["ladder"]
        rate = (
            f"{c['fraction']:.0%} of the maximum decide throughput, {lad['max_per_s']:,.0f}/s "
            f"(wrk at {lad['at_connections']} connections, best of "
            f"{', '.join(str(s['connections']) for s in lad['steps'])}, "
            f"{lad['step_s']:g} s each)"
        )
    else:
        rate = "given with --rate"
    issues = []
    if t["errors"]:
        issues.append(f"{t['errors']:,} errors")
    if v["growth"]:
        issues.append("memory growth")
    if v["process_changes"]:
        issues.append("server processes changed")
    if v["server_log"]["tracebacks"] or v["server_log"]["errors"]:
        issues.append("errors in the server log")
    headline = "no errors and no memory growth" if not issues else ", ".join(issues)
    pids = list(mem["processes"])
    lines = [
        f"# Tailor server soak - {report['measured_at']}",
        "",
        f"**Verdict: {headline}.** {t['requests']:,} decides at {c['rate_per_s']:,.0f}/s for "
        f"{c['duration_s']:g} s; total RSS {_mib(v['rss_start_kib'])} MiB at the start, "
        f"{_mib(v['rss_end_kib'])} MiB at the end; second-half slope "
        f"{v['slope_kib_per_min']:,.1f} KiB/min (threshold {v['threshold_kib_per_min']:,.1f}).",
        "",
        f"- Machine: {m['cpu']}, {m['cpus']} CPUs ({m['cpus_usable']} usable), "
        f"{m['memory_gib']} GiB; {m['os']}; load average before {m['load_average_before']}, "
        f"after {report['load_average_after']}",
        f"- Software: Python {m['python']}, {versions}; {m['wrk']}",
        f"- Commit: {m['git_commit']}{dirty}; bundle {c['bundle']}",
        f"- Server: `python -m server --workers {c['workers']}` on 127.0.0.1, keys, rate limits "
        f"off, event log on, visitor state {_STATE_TEXT[c.get('state', 'memory')]}; client and "
        "server share the machine's cores",
        f"- Load: open loop, {c['rate_per_s']:,.1f} decides/s = {rate}; "
        f"{c['pacer_connections']} keep-alive connections; "
        f"{c['repeat_share']:.0%} of requests repeat a recent visit; mix "
        f"{', '.join(f'{k} {val:.0%}' for k, val in c['mix'].items())}",
        f"- Windows: {c['windows']} of {c['sample_s']:g} s, after a warm-up of "
        f"{c['warmup_s']:g} s of wrk" + (" and the ladder" if report["ladder"] else ""),
        "",
        "## Totals",
        "",
        f"- Requests {t['requests']:,}, answered with a decision {t['ok']:,}, errors "
        f"{t['errors']:,} (socket {t['socket_errors']}, non-2xx {t['non_2xx']}, invalid "
        f"{t['invalid']}, unanswered {t['unfinished']}); {t['reconnects']} reconnects",
        f"- Latency from the scheduled send: p50 {t['p50_ms']:.2f} ms, p99 {t['p99_ms']:.2f} ms, "
        f"p99.9 {t['p99_9_ms']:.2f} ms, max {t['max_ms']:.1f} ms; worst window p99 "
        f"{t['worst_window_p99_ms']:.2f} ms; service p50 {t['service_p50_ms']:.2f} / p99 "
        f"{t['service_p99_ms']:.2f} ms",
        f"- CPU, average cores busy: {t['cpu']['server_cores']} the server, "
        f"{t['cpu']['client_cores']} the pacer, {t['cpu']['other_cores']} other processes "
        f"(noise), {t['cpu']['machine_cores']} in all, of {m['cpus_usable']}",
        f"- Event log written: {report['server']['event_log_mib']} MiB in "
        f"{report['server']['event_log_records']:,} records; server output: "
        f"{v['server_log']['tracebacks']} tracebacks, {v['server_log']['errors']} errors, "
        f"{v['server_log']['warnings']} warnings",
        "",
        "## Memory",
        "",
        f"Total RSS of the server's processes (MiB): {_mib(mem['ready']['total'])} ready, "
        f"{_mib(mem['after_warmup']['total'])} after warm-up, {_mib(mem['start']['total'])} "
        f"at the start of the soak, {_mib(mem['end']['total'])} at the end "
        f"(change {v['rss_change_kib'] / 1024:+,.1f} MiB, max {_mib(v['rss_max_kib'])}).",
        "",
        f"Slope over the second half ({v['slope_from_s']:g}-{v['slope_to_s']:g} s, "
        f"{v['slope_points']} samples): **{v['slope_kib_per_min']:,.1f} KiB/min**"
        + (
            f" (standard error {v['slope_stderr_kib_per_min']:,.1f})"
            if v["slope_stderr_kib_per_min"] is not None
            else ""
        )
        + f"; threshold {v['threshold_kib_per_min']:,.1f} KiB/min; growth: "
        f"**{'yes' if v['growth'] else 'no'}**. Rule: {v['rule']}.",
        "",
        "Processes: "
        + ", ".join(f"{pid} ({role})" for pid, role in mem["processes"].items())
        + "".join(
            f"; at {ch['t_s']:.0f} s gone {ch['gone']}, new {ch['new']}"
            for ch in v["process_changes"]
        )
        + ".",
        "",
        "## Windows",
        "",
        "Requests belong to the window of their scheduled send; RSS and CPU are read at the "
        "window's end. Errors: socket errors, non-2xx, answers without a decision, unanswered.",
        "",
        "| end s | sent | errors | p50 ms | p99 ms | max ms | service p99 | server cores | "
        "client cores | other cores | RSS total MiB | per process MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in report["windows"]:
        per = " / ".join(_mib(row["rss_kib"][pid]) for pid in pids if pid in row["rss_kib"])
        lines.append(
            f"| {row['end_s']:g} | {row['sent']:,} | {row['errors']} | {row['p50_ms']:.2f} | "
            f"{row['p99_ms']:.2f} | {row['max_ms']:.1f} | {row['service_p99_ms']:.2f} | "
            f"{row['server_cores']:.2f} | {row['client_cores']:.2f} | {row['other_cores']:.2f} | "
            f"{_mib(row['rss_kib']['total'])} | {per} |"
        )
    lines.append("")
    return "\n".join(lines)


# -- the command --------------------------------------------------------------------------------


def deadline_s(args: argparse.Namespace) -> float:
    """Seconds the whole run may take: the soak, the drain, the ladder, and five minutes for
    the server's start (90 s at most), the checks and the warm-up."""
    ladder = 0.0 if args.rate is not None else len(LADDER) * (LADDER_STEP_S + 10)
    return float(args.duration) + GRACE_S + ladder + 300.0


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _raise_deadline(signum: int, frame: FrameType | None) -> None:
    raise DeadlineExceeded("the run exceeded its deadline; the server is stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of soak")
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--rate", type=float, default=None, help="decides per second")
    load.add_argument("--fraction", type=float, default=0.7, help="of the max (ladder)")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds per window")
    parser.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    parser.add_argument("--out", default=None, help="report directory (benchmarks/results)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--pacer-connections", type=int, default=64)
    parser.add_argument("--repeat", type=float, default=0.3, help="share of repeated visits")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument(
        "--state",
        choices=STATES,
        default="memory",
        help="where visitor state lives: in each worker, or in a redis-server started for the run",
    )
    args = parser.parse_args(argv)
    if args.workers < 1 or args.pacer_connections < 1:
        parser.error("--workers and --pacer-connections must be at least 1")
    if not 0 < args.sample <= args.duration:
        parser.error("--sample must be in (0, --duration]")
    if args.rate is not None and args.rate * args.sample < 1:
        parser.error("--rate x --sample must be at least one request per window")
    if not 0 < args.fraction <= 1.5:
        parser.error("--fraction must be in (0, 1.5]")
    if not 0 <= args.repeat < 1:
        parser.error("--repeat must be in [0, 1)")
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed: `make system-deps` or `.ci/apt-install wrk`")
    if not (Path(args.bundle) / "manifest.json").is_file():
        parser.error(f"no bundle at {args.bundle}: `tailor train --out {args.bundle}`")
    args.deadline = deadline_s(args)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)  # unwind, so that the server is stopped
    signal.signal(signal.SIGALRM, _raise_deadline)
    signal.setitimer(signal.ITIMER_REAL, args.deadline)
    try:
        with tempfile.TemporaryDirectory(prefix="tailor-soak-") as tmp:
            report = measure(args, Path(tmp))
    except KeyboardInterrupt:
        print("interrupted: the server is stopped, no report written", file=sys.stderr)
        return 130
    except RuntimeError as exc:  # DeadlineExceeded, server not ready, wrk failed, bad mix
        print(f"soak failed: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    publish(report, markdown(report), name="soak", out=args.out, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
