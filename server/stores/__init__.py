"""Visitor profile stores: what the server remembers about a visitor between requests.

:mod:`~server.stores.base` defines the protocol and the pure update rules;
:mod:`~server.stores.memory` is the embedded default. :mod:`~server.stores.guard` remembers
issued decisions, seen event ids and counted orders (the event guard).

Must not import model_export or litestar.
"""

from __future__ import annotations

from server.stores.base import (
    MAX_CATEGORIES,
    MAX_OFFERS,
    SESSION_TIMEOUT,
    ProfileRecord,
    ProfileStore,
    VisitorProfile,
    behavior_at,
    updated_by_events,
    updated_by_visit,
)
from server.stores.guard import EventGuard, GuardRefusal, MemoryEventGuard
from server.stores.memory import MemoryProfileStore

__all__ = [
    "MAX_CATEGORIES",
    "MAX_OFFERS",
    "SESSION_TIMEOUT",
    "EventGuard",
    "GuardRefusal",
    "MemoryEventGuard",
    "MemoryProfileStore",
    "ProfileRecord",
    "ProfileStore",
    "VisitorProfile",
    "behavior_at",
    "updated_by_events",
    "updated_by_visit",
]
