"""Consent: the one place that says what may be read, stored and logged for a visit.

Every component that reads a stored profile, writes one, logs behaviour or applies feedback
events asks this module first; none of them reads ``Consent`` fields or the ``Sec-GPC`` header
on its own. A new consent kind is therefore a change here (and in the wire ``Consent``).

The rules, in full:

* ``Sec-GPC: 1`` (Global Privacy Control) is a refusal of both personalization and storage,
  whatever the body says.
* **personalization** lets the visit's behaviour and the stored profile shape the decision;
  without it the decision is contextual.
* **storage** lets a profile and the visit be written; reading a stored profile needs both
  (it is only used to personalize, and it only exists where storage was allowed).
* The **log** (:func:`log_policy`): with storage consent a decision or event is logged with
  its ids and page (URLs without query strings but for campaign keys); with personalization
  only it is logged anonymously (no ids, page, time zone, country, OS or browser: the
  visitor id is replaced by a per-decision stand-in); a refusal or GPC logs nothing (the
  visit is only counted). An event batch of unknown consent is logged with ids only for
  visitors that have a stored profile (a consented visit created it).
* A feedback event batch carries the visitor's consent when the tag sends it: one granting
  neither is a refusal (the batch is dropped, like ``Sec-GPC``); one without storage is
  logged but changes no profile; an absent one changes only profiles that a consented visit
  created.

Must not import server or model_export.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from sdk.schema import Consent

__all__ = [
    "REFUSED",
    "EventPermissions",
    "LogPermissions",
    "Permissions",
    "effective_consent",
    "event_log_policy",
    "event_permissions",
    "gpc",
    "log_policy",
    "permissions",
]

#: Consent with nothing granted (absent consent, or a ``Sec-GPC: 1`` refusal).
REFUSED = Consent(personalization=False, storage=False)


class Permissions(NamedTuple):
    """What a decide request's consent allows."""

    #: the visit's behaviour and stored profile may shape the decision
    personalize: bool
    #: the stored profile (and suppressions) may be read
    read_profile: bool
    #: the profile and the visit may be written
    store: bool


class EventPermissions(NamedTuple):
    """What a feedback event batch's consent allows."""

    #: the batch is accepted at all (logged); false drops it whole
    accept: bool
    #: events may change stored profiles (only ones that exist: a profile is created by a
    #: decide request with storage consent, never by an event)
    apply_to_profiles: bool


class LogPermissions(NamedTuple):
    """What a visit's consent lets the decision and event log hold."""

    #: a log line at all; false leaves only the metrics counters
    record: bool
    #: visitor, session and user ids (else a per-decision stand-in for the visitor id)
    ids: bool
    #: the merged behaviour a decision was built from
    behavior: bool
    #: the page and place: path, event URL and referrer, time zone, country, OS and browser
    context: bool


_LOG_NOTHING = LogPermissions(record=False, ids=False, behavior=False, context=False)
_LOG_ANONYMOUS = LogPermissions(record=True, ids=False, behavior=False, context=False)


def _log_permissions(personal: bool, storage: bool) -> LogPermissions:
    if storage:
        return LogPermissions(record=True, ids=True, behavior=personal, context=True)
    return _LOG_ANONYMOUS if personal else _LOG_NOTHING


_LOG_TABLE = {
    personal: {storage: _log_permissions(personal, storage) for storage in (False, True)}
    for personal in (False, True)
}


def gpc(headers: Mapping[str, str]) -> bool:
    """Whether the request carries a Global Privacy Control refusal (``Sec-GPC: 1``)."""
    return headers.get("sec-gpc") == "1"


def effective_consent(consent: Consent, *, refused_by_gpc: bool) -> Consent:
    """The consent a request is decided under: ``consent``, or :data:`REFUSED` under GPC."""
    if refused_by_gpc and (consent.personalization or consent.storage):
        return REFUSED
    return consent


def _permissions(personal: bool, storage: bool) -> Permissions:
    return Permissions(
        personalize=personal,
        read_profile=personal and storage,
        store=storage,
    )


# every combination built once: the decide path asks several times per request
_TABLE = {
    personal: {storage: _permissions(personal, storage) for storage in (False, True)}
    for personal in (False, True)
}


def permissions(consent: Consent) -> Permissions:
    """What ``consent`` (already :func:`effective_consent`) allows for one visit."""
    return _TABLE[consent.personalization][consent.storage]


def event_permissions(consent: Consent | None, *, refused_by_gpc: bool) -> EventPermissions:
    """What an event batch sent with ``consent`` (None: unknown) allows."""
    if refused_by_gpc or (consent is not None and not (consent.personalization or consent.storage)):
        return EventPermissions(accept=False, apply_to_profiles=False)
    return EventPermissions(accept=True, apply_to_profiles=consent is None or consent.storage)


def log_policy(consent: Consent, *, refused_by_gpc: bool = False) -> LogPermissions:
    """What the log may hold of a visit decided or sent under ``consent``."""
    if refused_by_gpc:
        return _LOG_NOTHING
    return _LOG_TABLE[consent.personalization][consent.storage]


def event_log_policy(
    consent: Consent | None, *, refused_by_gpc: bool, stored: bool
) -> LogPermissions:
    """What the log may hold of an event sent with ``consent`` (None: unknown) by a visitor
    who has a stored profile (``stored``) or not."""
    if consent is None and not refused_by_gpc:
        return _LOG_TABLE[True][True] if stored else _LOG_ANONYMOUS
    return log_policy(consent or REFUSED, refused_by_gpc=refused_by_gpc)
