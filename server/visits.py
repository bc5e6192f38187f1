"""The stateful shell around the pure decider, for the decide routes: read what the visits
need from the profile store in one call, decide, then record the visits and pin their
decisions in one call, issue them to public keys' visitors, log and count them.

A store that fails (:class:`~server.stores.redis_conn.StateUnavailable`) never fails a
request: reads that fail give contextual decisions carrying the reason ``state.unavailable``
(:data:`STATE_UNAVAILABLE`; nothing stored, nothing pinned), writes that fail are counted
(``Engine.state_write_errors``), since the answer is already decided.

Must not import model_export or litestar.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

import msgspec

from sdk import Decider
from sdk.consent import permissions
from sdk.features import FeatureRow
from sdk.schema import Behavior, DecideRequest, Decision, Reason
from server.observability.timing import ServerTiming
from server.state import Engine
from server.stores import Pinned, VisitState, VisitWrite, behavior_at
from server.stores.redis_conn import DECIDE_READ, StateUnavailable

__all__ = [
    "STATE_UNAVAILABLE",
    "decide_loaded",
    "decide_visits",
    "decided",
    "load_visits",
    "mark_degraded",
    "visit_inputs",
]

_NONE_SUPPRESSED: frozenset[str] = frozenset()
_NOTHING = VisitState()
#: The reason a decision made without the shared store carries (it is then contextual).
STATE_UNAVAILABLE = Reason(
    code="state.unavailable",
    message="the visitor's stored state could not be read in time: decided from the request "
    "alone, nothing stored",
)


async def load_visits(
    engine: Engine,
    requests: list[DecideRequest],
    keys: list[str | None],
    decider: Decider | None = None,
    fresh: list[bool] | None = None,
) -> tuple[list[VisitState], bool]:
    """What the decides of ``requests`` read from the store, in one call: each visitor's
    record, the decision pinned to the visit ``keys[i]`` and, when ``decider`` (by default
    the serving one) has a sticky experiment, the visitor's sticky arms, for requests with
    storage consent (others read nothing; nor do visitors ``fresh[i]``, whose id was minted for
    this request and who name no user, so nothing can be stored for them); and whether the
    store failed (then nothing was read)."""
    states = [_NOTHING] * len(requests)
    store = engine.profiles
    if store is None:
        return states, False
    wanted = [
        i
        for i, r in enumerate(requests)
        if permissions(r.consent).store and not (fresh and fresh[i] and r.user_id is None)
    ]
    if not wanted:
        return states, False
    decider = decider if decider is not None else engine.decider
    arms = decider is not None and decider.sticky
    reading = DECIDE_READ.set(True)  # the round trips before the answer are counted apart
    try:
        visits = [(requests[i].visitor_id, keys[i]) for i in wanted]
        # a visitor identified for the first time is decided with its user's profile too
        users = [requests[i].user_id for i in wanted]
        named = users if any(u is not None for u in users) else None
        loaded = await store.load_visits(visits, arms=arms, users=named)
    except StateUnavailable:
        engine.state_read_errors += 1
        if engine.metrics is not None:  # tailor_decision_fallbacks{kind="state_unavailable"}
            engine.metrics.observe_fallback("state_unavailable")
        return states, True
    finally:
        DECIDE_READ.reset(reading)
    for i, state in zip(wanted, loaded, strict=True):
        states[i] = state
    return states, False


def decide_loaded(
    decider: Decider,
    requests: list[DecideRequest],
    states: list[VisitState],
    degraded: bool,
    now: datetime,
    rows: list[FeatureRow],
) -> tuple[list[Decision], list[Behavior | None]]:
    """The pure decisions of ``requests`` on what was read (profiles and suppressions where
    consent lets them be read, sticky arms where they were read), marked
    ``state.unavailable`` when the store failed; and the profiles they were decided with."""
    profiles, suppressed = visit_inputs(requests, states, now)
    arms = [state.arms for state in states]
    if len(requests) == 1:
        decisions = [
            decider.decide(
                requests[0],
                profile=profiles[0],
                suppressed=suppressed[0],
                sticky=arms[0],
                rows=rows,
            )
        ]
    else:
        decisions = decider.decide_many(
            requests,
            profiles=profiles,
            suppressed=suppressed,
            sticky=arms if any(arms) else None,
            rows=rows,
        )
    return mark_degraded(decisions, requests, degraded), profiles


def visit_inputs(
    requests: list[DecideRequest], states: list[VisitState], now: datetime
) -> tuple[list[Behavior | None], list[frozenset[str]]]:
    """Per request, the stored profile and the suppressed offers a decision may read: only
    where consent lets the profile be read (else none)."""
    profiles: list[Behavior | None] = []
    suppressed: list[frozenset[str]] = []
    for req, state in zip(requests, states, strict=True):
        record = state.record
        if record is None or not permissions(req.consent).read_profile:
            profiles.append(None)
            suppressed.append(_NONE_SUPPRESSED)
        else:
            profiles.append(behavior_at(record, now))
            suppressed.append(frozenset(record.suppressed))
    return profiles, suppressed


def mark_degraded(
    decisions: list[Decision], requests: list[DecideRequest], degraded: bool
) -> list[Decision]:
    """``decisions`` with the ``state.unavailable`` reason when the store failed (for visitors
    whose consent would have had their state stored)."""
    if not degraded:
        return decisions
    return [
        msgspec.structs.replace(d, reasons=[*d.reasons, STATE_UNAVAILABLE])
        if permissions(r.consent).store
        else d
        for d, r in zip(decisions, requests, strict=True)
    ]


async def decided(
    engine: Engine,
    requests: list[DecideRequest],
    decisions: list[Decision],
    read: tuple[list[VisitState], bool],
    decided_with: tuple[list[Behavior | None], list[FeatureRow]],
    now: datetime,
    client: tuple[str, bytes] | None,
    pins: list[Pinned | None] | None = None,
    decider: Decider | None = None,
    timing: ServerTiming | None = None,
) -> list[bool]:
    """What follows the decisions, once they are computed: the visits recorded (with storage
    consent, and for a public-key client within its new-profile cap), their decisions
    pinned and the sticky arms they exposed stored (those of ``decider``, the one that
    decided, by default the serving one; only where the arms were read), in one call, and
    the decisions issued to a public key's visitors (concurrently), then logged and counted.
    Returns, for each, whether its decision may be re-served from this worker's cache (not
    when the store failed, or the profile changed meanwhile). A failed write is counted,
    never an error: the answer is already decided. ``timing``, when given, records the
    stages ``state-write`` (the store's call, and the tokens issued), ``log`` (the event
    log) and ``metrics``."""
    start = time.perf_counter_ns()
    states, degraded = read
    profiles, rows = decided_with
    store = engine.profiles
    reusable = [not degraded] * len(requests)
    writes: list[VisitWrite] = []
    written: list[int] = []
    decider = decider if decider is not None else engine.decider
    sticky = decider is not None and decider.sticky
    if store is not None and not degraded:
        for i, (req, state) in enumerate(zip(requests, states, strict=True)):
            if not permissions(req.consent).store:
                continue
            if (
                client is not None
                and state.record is None
                and not await engine.allow_new_profile(client)
            ):
                continue
            pin = pins[i] if pins is not None else None
            arms: dict[str, str] = {}
            if sticky and state.arms is not None and decider is not None:
                arms = decider.sticky_fields(decisions[i], state.arms)
            writes.append(
                VisitWrite(visitor_id=req.visitor_id, request=req, read=state, pin=pin, arms=arms)
            )
            written.append(i)
    # everything after the answer in one call: the visits, their pins and sticky arms, and
    # (for a public key) the decisions issued to its visitors, in the store's pipeline
    issued = [(d.decision_id, d.visitor_id) for d in decisions] if client is not None else []
    also = None
    if writes and store is not None and store.backend == "redis" and issued:
        also = engine.guard.issuing(issued)
        issued = []
    calls: list[Awaitable[Any]] = []
    if writes and store is not None:
        calls.append(store.commit_visits(writes, now=now, also=also))
    calls.extend(engine.guard.issue(d, v) for d, v in issued)
    # a decide's one or two calls one after the other (a Redis store takes the tokens in its
    # own pipeline, so at most one waits on the network; gathering costs a task per call); a
    # batch's many tokens concurrently
    results: list[Any] = []
    if len(calls) <= 2:
        for call in calls:
            try:
                results.append(await call)
            except StateUnavailable as exc:
                results.append(exc)
    else:
        results = await asyncio.gather(*calls, return_exceptions=True)
    for k, result in enumerate(results):
        if isinstance(result, StateUnavailable):
            engine.state_write_errors += 1
            if engine.metrics is not None:
                engine.metrics.observe_fallback("state_write_failed")
            if k == 0 and writes:
                reusable = [r and i not in written for i, r in enumerate(reusable)]
        elif isinstance(result, BaseException):
            raise result
        elif k == 0 and writes:
            for i, ok in zip(written, result, strict=True):
                reusable[i] = reusable[i] and ok
    logged = time.perf_counter_ns()
    if engine.eventlog is not None:
        for req, decision, profile, row in zip(requests, decisions, profiles, rows, strict=True):
            engine.eventlog.append_decision(decision, req, profile=profile, row=row)
    counted = time.perf_counter_ns()
    if engine.metrics is not None:
        for decision in decisions:
            engine.metrics.observe_decision(decision)
    if timing is not None:
        timing.add("state-write", (logged - start) / 1e9)
        timing.add("log", (counted - logged) / 1e9)
        timing.add("metrics", (time.perf_counter_ns() - counted) / 1e9)
    return reusable


async def decide_visits(
    engine: Engine,
    decider: Decider,
    requests: list[DecideRequest],
    client: tuple[str, bytes] | None = None,
    fresh: list[bool] | None = None,
) -> list[Decision]:
    """Profiles in, decisions out, visits recorded and logged: the stateful shell around the
    pure decider, for one request (:meth:`~sdk.Decider.decide`) or several (one batched
    :meth:`~sdk.Decider.decide_many`), reading the store once and writing once; ``client``:
    a public-key client whose new profiles are capped (:meth:`Engine.allow_new_profile`);
    ``fresh``: which visitor ids were minted for these requests (not read)."""
    now = datetime.now(UTC)
    # sensitive categories and pages leave the request before anything stores or logs it
    scrub = decider.sensitivity.scrub_request
    requests = [scrub(r) for r in requests]
    read = await load_visits(engine, requests, [None] * len(requests), decider, fresh)
    rows: list[FeatureRow] = []
    decisions, profiles = decide_loaded(decider, requests, read[0], read[1], now, rows)
    await decided(engine, requests, decisions, read, (profiles, rows), now, client, None, decider)
    return decisions
