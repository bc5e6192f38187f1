"""Consent: the one place that says what may be read, stored and logged for a visit.

Every component that reads a stored profile, writes one, logs behaviour or applies feedback
events asks this module first; none of them reads ``Consent`` fields or the ``Sec-GPC`` header
on its own. A new consent kind is therefore a change here (and in the wire ``Consent``).

The rules, in full:

* ``Sec-GPC: 1`` (Global Privacy Control) is a refusal of both personalization and storage,
  whatever the body says.
* **personalization** lets the visit's behaviour and the stored profile shape the decision,
  and the merged behaviour be logged with it; without it the decision is contextual.
* **storage** lets a profile and the visit be written; reading a stored profile needs both
  (it is only used to personalize, and it only exists where storage was allowed).
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
    "Permissions",
    "effective_consent",
    "event_permissions",
    "gpc",
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
    #: the merged behaviour may be written to the decision log
    log_behavior: bool


class EventPermissions(NamedTuple):
    """What a feedback event batch's consent allows."""

    #: the batch is accepted at all (logged); false drops it whole
    accept: bool
    #: events may change stored profiles (only ones that exist: a profile is created by a
    #: decide request with storage consent, never by an event)
    apply_to_profiles: bool


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
        log_behavior=personal,
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
