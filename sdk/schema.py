"""The wire schema: every field that crosses a process boundary, as msgspec Structs.

This module is the single definition of the decide request, the decision and the feedback
events. The server, the Python client, the in-process decider, the training code and (through
the generated JSON Schema in ``sdk/data/schema.json``) the browser tag all read these types.

Rules kept here:

* camelCase on the wire (``rename="camel"``), snake_case in Python.
* Wire types ignore unknown fields so old servers accept newer clients (schema evolution).
* Browser numbers arrive as floats and may be ``null``; ids are strings.
* Constraints use ``Annotated[..., Meta(...)]`` so they reach JSON Schema and OpenAPI, and are
  checked while decoding, never in ``__init__``.

Must not import anything but the standard library and msgspec.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

__all__ = [
    "PROFILE_BATCH_MAX",
    "PROFILE_CATEGORIES_MAX",
    "SCHEMA_VERSION",
    "Behavior",
    "Campaign",
    "Consent",
    "Content",
    "Context",
    "Conversion",
    "ConversionBatch",
    "CustomerProfile",
    "DataRequest",
    "DecideRequest",
    "Decision",
    "Event",
    "EventBatch",
    "Lifecycle",
    "Location",
    "Page",
    "PersonaResult",
    "ProfileBatch",
    "ProfileOutcome",
    "ProfilesImported",
    "RankedOffer",
    "Reason",
    "RfmResult",
    "Screen",
    "SegmentResult",
    "Signals",
    "SlotDecision",
    "UserAgentBrand",
    "UserAgentData",
    "decision_decoder",
    "json_schema",
    "request_decoder",
    "write_json_schema",
]

#: Bumped on any incompatible change to the wire types below.
SCHEMA_VERSION = "1"

# --- constrained scalars -------------------------------------------------------------------

Id = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]
SlotId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
ShortText = Annotated[str, Meta(max_length=256)]
UrlText = Annotated[str, Meta(max_length=4096)]
Count = Annotated[float, Meta(ge=0, le=1_000_000)]
Money = Annotated[float, Meta(ge=0, le=1_000_000_000)]
Days = Annotated[float, Meta(ge=0, le=36_500)]
Probability = Annotated[float, Meta(ge=0, le=1)]
Pixels = Annotated[float, Meta(ge=0, le=100_000)]
Token = Annotated[str, Meta(min_length=1, max_length=256)]


class _Wire(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Base of every wire type: immutable, keyword-only, camelCase, unknown fields ignored."""


# --- decide request ------------------------------------------------------------------------


class Page(_Wire, frozen=True, kw_only=True):
    """The page being viewed (Segment's ``context.page``)."""

    url: UrlText | None = None
    path: UrlText | None = None
    referrer: UrlText | None = None
    title: ShortText | None = None
    search: UrlText | None = None


class Campaign(_Wire, frozen=True, kw_only=True):
    """UTM campaign parameters of the visit (Segment's ``context.campaign``)."""

    source: ShortText | None = None
    medium: ShortText | None = None
    name: ShortText | None = None
    term: ShortText | None = None
    content: ShortText | None = None


class UserAgentBrand(_Wire, frozen=True, kw_only=True):
    """One entry of ``navigator.userAgentData.brands``."""

    brand: ShortText
    version: ShortText = ""


class UserAgentData(_Wire, frozen=True, kw_only=True):
    """User-Agent Client Hints, as ``navigator.userAgentData`` reports them."""

    brands: Annotated[list[UserAgentBrand], Meta(max_length=16)] = []
    mobile: bool | None = None
    platform: ShortText | None = None
    platform_version: ShortText | None = None
    model: ShortText | None = None


class Screen(_Wire, frozen=True, kw_only=True):
    """Screen size in CSS pixels and device pixel ratio."""

    width: Pixels | None = None
    height: Pixels | None = None
    density: Annotated[float, Meta(ge=0, le=20)] | None = None
    touch: bool | None = None


class Location(_Wire, frozen=True, kw_only=True):
    """Where the visitor is. Filled by the server from trusted edge headers or a GeoIP database;
    a value sent by a browser is replaced by the server."""

    country: Annotated[str, Meta(min_length=2, max_length=2)] | None = None
    region: ShortText | None = None
    city: ShortText | None = None
    source: Literal["header", "mmdb", "timezone", "locale", "request"] | None = None


class Context(_Wire, frozen=True, kw_only=True):
    """Segment-style context of the visit."""

    page: Page = Page()
    campaign: Campaign = Campaign()
    user_agent: Annotated[str, Meta(max_length=1024)] | None = None
    user_agent_data: UserAgentData | None = None
    locale: Annotated[str, Meta(max_length=35)] | None = None
    timezone: Annotated[str, Meta(max_length=64)] | None = None
    screen: Screen = Screen()
    location: Location | None = None


class Behavior(_Wire, frozen=True, kw_only=True):
    """What the page or the caller knows about the visitor's behaviour; every field optional."""

    page_views: Count | None = None
    session_count: Count | None = None
    categories_viewed: Annotated[
        list[Annotated[str, Meta(max_length=64)]], Meta(max_length=200)
    ] = []
    searches: Count | None = None
    searches_without_results: Count | None = None
    cart_items: Count | None = None
    cart_value: Money | None = None
    purchases: Count | None = None
    revenue: Money | None = None
    days_since_last_visit: Days | None = None
    days_since_last_purchase: Days | None = None
    days_since_first_purchase: Days | None = None


class Consent(_Wire, frozen=True, kw_only=True):
    """What the visitor allowed. Absent consent means no personalization and nothing stored."""

    personalization: bool = False
    storage: bool = False


class DecideRequest(_Wire, frozen=True, kw_only=True):
    """One visit asking for a decision."""

    visitor_id: Id
    session_id: Id | None = None
    user_id: Id | None = None
    consent: Consent = Consent()
    context: Context = Context()
    behavior: Behavior = Behavior()
    slots: Annotated[list[SlotId], Meta(max_length=32)] = []
    timestamp: datetime | None = None
    #: The visitor token the server issued with an earlier decision (``Decision.visitorToken``):
    #: with a public key, the stored profile of ``visitorId`` is read or changed only with it.
    visitor_token: Token | None = None
    #: ``userId`` signed by the site's backend (:func:`sdk.tokens.user_token`): with a public
    #: key, a user id without a valid one is dropped.
    user_token: Token | None = None


# --- decision ------------------------------------------------------------------------------


class Reason(_Wire, frozen=True, kw_only=True):
    """Why the decision came out as it did, as a stable code plus a human message."""

    code: str
    message: str


class PersonaResult(_Wire, frozen=True, kw_only=True):
    """The visitor's persona and their affinity to every persona (sums to 1)."""

    id: str
    name: str
    affinities: dict[str, float]


class SegmentResult(_Wire, frozen=True, kw_only=True):
    """The learned segment the visitor is closest to."""

    id: int
    distance: float


class Lifecycle(_Wire, frozen=True, kw_only=True):
    """The visitor's lifecycle stage and the rule that assigned it."""

    stage: str
    rule: str


class RankedOffer(_Wire, frozen=True, kw_only=True):
    """An eligible offer with its next-best-offer score."""

    id: str
    name: str
    score: float
    rank: int


class Content(_Wire, frozen=True, kw_only=True):
    """What a slot shows. ``html`` comes only from the bundle's catalogue and is sanitised by the
    tag before insertion."""

    type: Literal["text", "html", "image", "link"]
    text: str | None = None
    html: str | None = None
    image_url: str | None = None
    href: str | None = None
    alt: str | None = None


class Candidate(_Wire, frozen=True, kw_only=True):
    """A variant the slot could have shown, with the probability the policy gave it."""

    variant_id: str
    probability: Probability


class SlotDecision(_Wire, frozen=True, kw_only=True):
    """The variant chosen for one slot and the probability with which it was chosen.

    ``candidates`` lists every variant the policy could have chosen with its probability (they
    sum to 1; ``propensity`` is the chosen one's), when the choice was randomized (exploration);
    ``arm`` is the experiment arm that decided the slot, if any.
    """

    variant_id: str
    offer_id: str | None
    content: Content
    propensity: Probability
    reason: str
    candidates: list[Candidate] | None = None
    arm: str | None = None


class RfmResult(_Wire, frozen=True, kw_only=True):
    """RFM quintile scores (1-5) of the visitor's profile, its code and weighted score."""

    code: str
    r: int
    f: int
    m: int
    score: float


class Signals(_Wire, frozen=True, kw_only=True):
    """What enrichment derived from the context; returned so callers can see what was used."""

    device_type: str
    os: str | None
    browser: str | None
    touch: bool
    referrer_class: str
    referrer_source: str | None
    search_terms: str | None
    country: str | None
    local_hour: int
    local_weekday: int


class Decision(_Wire, frozen=True, kw_only=True):
    """The answer to one :class:`DecideRequest`."""

    decision_id: str
    model_version: str
    visitor_id: str
    session_id: str | None
    personalized: bool
    persona: PersonaResult | None
    segment: SegmentResult | None
    lifecycle: Lifecycle
    offers: list[RankedOffer]
    slots: dict[str, SlotDecision]
    signals: Signals
    reasons: list[Reason]
    experiment: dict[str, str] | None = None
    ttl: int = 1800
    rfm: RfmResult | None = None
    scores: dict[str, float] | None = None
    #: Issued by the server to a public-key visitor with storage consent: the proof that
    #: ``visitorId`` is theirs, to store with it and send back (``visitorToken``) on later
    #: decides, events and data requests. None from secret keys and the SDK's local mode.
    visitor_token: str | None = None


# --- feedback events -----------------------------------------------------------------------


class Event(_Wire, frozen=True, kw_only=True):
    """One feedback event about a decision."""

    type: Literal["impression", "click", "conversion", "dismiss", "not_interested", "pageview"]
    visitor_id: Id
    session_id: Id | None = None
    decision_id: Annotated[str, Meta(max_length=64)] | None = None
    slot: SlotId | None = None
    variant_id: Annotated[str, Meta(max_length=64)] | None = None
    offer_id: Annotated[str, Meta(max_length=64)] | None = None
    value: Money | None = None
    currency: Annotated[str, Meta(min_length=3, max_length=3)] | None = None
    timestamp: datetime | None = None
    properties: Annotated[dict[str, Any], Meta(max_length=32)] = {}
    #: A random id of the event (the tag always sends one): with a public key it is required,
    #: and an event id seen before is a replay and refused.
    event_id: Id | None = None


class EventBatch(_Wire, frozen=True, kw_only=True):
    """Events sent together (the tag batches them and sends on page hide)."""

    events: Annotated[list[Event], Meta(min_length=1, max_length=100)]
    sent_at: datetime | None = None
    #: The visitor's consent when the batch was sent (the tag always sends it). Absent means
    #: unknown: events then change only profiles that a consented decide request created.
    #: Neither personalization nor storage is a refusal: the batch is dropped, like ``Sec-GPC``.
    consent: Consent | None = None
    #: The sender's visitor token (public keys): events change the stored profile of their
    #: visitor only when it is valid for that visitor.
    visitor_token: Token | None = None


class DataRequest(_Wire, frozen=True, kw_only=True):
    """A visitor asking for their own data or its erasure (``POST /v1/me``,
    ``POST /v1/me/forget``), proven by their visitor token."""

    visitor_token: Token


class Conversion(_Wire, frozen=True, kw_only=True):
    """A purchase the site's backend confirms (``POST /v1/conversions``, secret key): trusted
    revenue, counted once per ``orderId``."""

    visitor_id: Id
    order_id: Id
    value: Money
    currency: Annotated[str, Meta(min_length=3, max_length=3)] | None = None
    decision_id: Annotated[str, Meta(max_length=64)] | None = None
    offer_id: Annotated[str, Meta(max_length=64)] | None = None
    timestamp: datetime | None = None


class ConversionBatch(_Wire, frozen=True, kw_only=True):
    """Confirmed conversions sent together."""

    conversions: Annotated[list[Conversion], Meta(min_length=1, max_length=100)]


# --- customer profiles pushed by the backend ------------------------------------------------

#: Most profiles one ``POST /v1/profiles/import`` may carry.
PROFILE_BATCH_MAX = 1000
#: Categories a pushed profile may carry (the stored profile keeps 50, newest last).
PROFILE_CATEGORIES_MAX = 50
AwareTime = Annotated[datetime, Meta(tz=True)]


class CustomerProfile(_Wire, frozen=True, kw_only=True):
    """One customer's order history as of ``asOf`` (``POST /v1/profiles/import``, secret
    key): aggregates only, never order rows. It becomes the base of the profile of the user
    ``userId`` (the id the site's backend signs user tokens for); purchases recorded live at
    or after ``asOf`` add to it, older ones are taken to be in it."""

    user_id: Id
    #: the time the history was computed at: orders before it are in it
    as_of: AwareTime
    purchases: Annotated[int, Meta(ge=0, le=1_000_000)]
    revenue: Money
    first_purchase_at: AwareTime | None = None
    last_purchase_at: AwareTime | None = None
    #: the customer's categories, newest (or most bought) last
    categories: Annotated[
        list[Annotated[str, Meta(min_length=1, max_length=64)]],
        Meta(max_length=PROFILE_CATEGORIES_MAX),
    ] = []


class ProfileBatch(_Wire, frozen=True, kw_only=True):
    """Customer profiles pushed together."""

    profiles: Annotated[list[CustomerProfile], Meta(min_length=1, max_length=PROFILE_BATCH_MAX)]


class ProfileOutcome(_Wire, frozen=True, kw_only=True):
    """What became of one pushed profile: ``written`` (stored as the user's base),
    ``unchanged`` (the same history was stored already), ``stale`` (a history with a later
    ``asOf`` is stored: ignored) or ``invalid`` (``reason`` says why: nothing stored)."""

    user_id: str
    status: Literal["written", "unchanged", "stale", "invalid"]
    reason: str | None = None


class ProfilesImported(_Wire, frozen=True, kw_only=True):
    """The answer to ``POST /v1/profiles/import``: counts, and every row's outcome in order."""

    written: Annotated[int, Meta(ge=0)] = 0
    unchanged: Annotated[int, Meta(ge=0)] = 0
    stale: Annotated[int, Meta(ge=0)] = 0
    invalid: Annotated[int, Meta(ge=0)] = 0
    results: list[ProfileOutcome] = []


# --- codecs, built once ---------------------------------------------------------------------

request_decoder = msgspec.json.Decoder(DecideRequest)
decision_decoder = msgspec.json.Decoder(Decision)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of every wire type, as committed in ``sdk/data/schema.json``."""
    import inspect

    _, components = msgspec.json.schema_components(
        [DecideRequest, Decision, EventBatch, DataRequest, ConversionBatch],
        ref_template="#/$defs/{name}",
    )
    for component in components.values():  # msgspec releases differ in docstring indentation
        if isinstance(component.get("description"), str):
            component["description"] = inspect.cleandoc(component["description"])
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://tailor.dev/schema/v{SCHEMA_VERSION}.json",
        "title": "Tailor wire schema",
        "version": SCHEMA_VERSION,
        "$defs": dict(sorted(components.items())),
    }


def write_json_schema(path: str) -> None:
    """Write :func:`json_schema` to ``path`` (2-space indented, sorted, trailing newline)."""
    import json

    with open(path, "w", encoding="utf-8") as fh:
        json.dump(json_schema(), fh, indent=2, sort_keys=True, ensure_ascii=False)
        fh.write("\n")
