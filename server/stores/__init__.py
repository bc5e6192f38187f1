"""Visitor profile stores: what the server remembers about a visitor between requests.

:mod:`~server.stores.base` defines the protocol and the pure update rules;
:mod:`~server.stores.memory` is the embedded default, :mod:`~server.stores.redis` the store
every worker and replica shares (imported from there: it needs the ``redis`` client), with
:mod:`~server.stores.spool` keeping the updates it could not take. :mod:`~server.stores.guard`
remembers issued decisions, seen event ids and counted orders (the event guard).

Must not import model_export or litestar.
"""

from __future__ import annotations

from server.stores.base import (
    DECISIVE_EVENTS,
    MAX_CATEGORIES,
    MAX_OFFERS,
    SESSION_TIMEOUT,
    Pinned,
    PipelineWrite,
    ProfileRecord,
    ProfileStore,
    VisitorProfile,
    VisitState,
    VisitWrite,
    behavior_at,
    updated_by_events,
    updated_by_visit,
)
from server.stores.guard import EventGuard, GuardRefusal, MemoryEventGuard
from server.stores.memory import MemoryProfileStore

__all__ = [
    "DECISIVE_EVENTS",
    "MAX_CATEGORIES",
    "MAX_OFFERS",
    "SESSION_TIMEOUT",
    "EventGuard",
    "GuardRefusal",
    "MemoryEventGuard",
    "MemoryProfileStore",
    "Pinned",
    "PipelineWrite",
    "ProfileRecord",
    "ProfileStore",
    "VisitState",
    "VisitWrite",
    "VisitorProfile",
    "behavior_at",
    "updated_by_events",
    "updated_by_visit",
]
