"""The training configuration: a small TOML file mapping a customer's data onto Tailor (every
key optional except ``[data].transactions``; unknown keys are errors).

Must not import server.
"""

from __future__ import annotations

import tomllib
from datetime import datetime
from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta

__all__ = [
    "DataConfig",
    "EventColumns",
    "OffersConfig",
    "PersonaOverride",
    "PersonasConfig",
    "PredictConfig",
    "SegmentsConfig",
    "TrainingConfig",
    "TraitsConfig",
    "TransactionColumns",
    "load_config",
]


class _Cfg(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of config tables: immutable, unknown keys are errors."""


class TransactionColumns(_Cfg, frozen=True, kw_only=True):
    """Column names of the transactions files. ``None`` means the column is absent."""

    customer_id: str = "customer_id"
    order_id: str | None = "order_id"
    timestamp: str = "timestamp"
    amount: str = "amount"
    quantity: str | None = None
    category: str | None = None
    channel: str | None = None


class EventColumns(_Cfg, frozen=True, kw_only=True):
    """Column names of the web events files; defaults read Tailor's own event log."""

    visitor_id: str = "visitorId"
    customer_id: str | None = "userId"
    type: str = "type"
    timestamp: str = "timestamp"
    session_id: str | None = "sessionId"
    offer_id: str | None = "offerId"
    value: str | None = "value"
    propensity: str | None = "propensity"
    category: str | None = "category"
    url: str | None = "url"
    referrer: str | None = "referrer"
    user_agent: str | None = "userAgent"
    timezone: str | None = "timezone"


class Columns(_Cfg, frozen=True, kw_only=True):
    """Column mappings per input."""

    transactions: TransactionColumns = TransactionColumns()
    events: EventColumns = EventColumns()
    traits_customer_id: str = "customer_id"


class DataConfig(_Cfg, frozen=True, kw_only=True):
    """Where the data is and how to read it."""

    transactions: str
    events: str | None = None
    traits: str | None = None
    timezone: str = "UTC"
    max_amount: Annotated[float, Meta(gt=0)] = 100_000.0
    date_formats: list[str] = []
    #: True when transactions rows are order lines (several rows share an order id); False
    #: (default) when each row is an order, so a repeated order id is a duplicate export row.
    order_lines: bool = False


class TraitsConfig(_Cfg, frozen=True, kw_only=True):
    """CRM columns to use as features (none unless listed)."""

    use: list[str] = []


class SegmentsConfig(_Cfg, frozen=True, kw_only=True):
    """How segments are chosen: fixed ``k`` or the best k in [k_min, k_max] by silhouette and
    stability over ``seeds`` seeds; segments under ``min_share`` of customers are merged."""

    k: Annotated[int, Meta(ge=2, le=50)] | None = None
    k_min: Annotated[int, Meta(ge=2, le=50)] = 3
    k_max: Annotated[int, Meta(ge=2, le=50)] = 8
    seeds: Annotated[int, Meta(ge=1, le=20)] = 3
    min_share: Annotated[float, Meta(ge=0, lt=0.5)] = 0.02
    min_stability: Annotated[float, Meta(ge=0, le=1)] = 0.6
    sample: Annotated[int, Meta(ge=100)] = 5000


class PersonaOverride(_Cfg, frozen=True, kw_only=True):
    """A marketer's name and description for a persona template."""

    name: str
    description: str | None = None


class PersonasConfig(_Cfg, frozen=True, kw_only=True):
    """Persona naming: overrides by template id."""

    overrides: dict[str, PersonaOverride] = {}


class PredictConfig(_Cfg, frozen=True, kw_only=True):
    """Predictive scores: horizon of churn and expected purchases/value, in days."""

    horizon_days: Annotated[int, Meta(ge=7, le=730)] = 90


class OffersConfig(_Cfg, frozen=True, kw_only=True):
    """The offer catalogue (JSON; the packaged demo catalogue by default)."""

    catalogue: str | None = None


class PrivacyConfig(_Cfg, frozen=True, kw_only=True):
    """What a bundle may report about groups of customers (see ``docs/training.md``)."""

    #: Groups (segments, trait values, RFM cells, category counts) smaller than this are
    #: merged into "other" or left out of the manifest and the model card.
    min_group_size: Annotated[int, Meta(ge=1, le=10_000)] = 10


class TrainingConfig(_Cfg, frozen=True, kw_only=True):
    """A whole training run."""

    name: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_\-]{1,40}$")] = "bundle"
    seed: int = 7
    cutoff: datetime | None = None
    data: DataConfig
    columns: Columns = Columns()
    traits: TraitsConfig = TraitsConfig()
    segments: SegmentsConfig = SegmentsConfig()
    personas: PersonasConfig = PersonasConfig()
    predict: PredictConfig = PredictConfig()
    offers: OffersConfig = OffersConfig()
    privacy: PrivacyConfig = PrivacyConfig()


def load_config(path: str | Path) -> TrainingConfig:
    """Read a TOML training config; relative data paths are resolved against its folder.

    Raises:
        msgspec.ValidationError: unknown keys or wrong types, with the path of the key.
        tomllib.TOMLDecodeError: the file is not TOML.
    """
    path = Path(path)
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    config = msgspec.convert(raw, TrainingConfig)
    base = path.resolve().parent

    def resolve(p: str | None) -> str | None:
        return None if p is None else str((base / p).resolve())

    data = msgspec.structs.replace(
        config.data,
        transactions=resolve(config.data.transactions) or config.data.transactions,
        events=resolve(config.data.events),
        traits=resolve(config.data.traits),
    )
    offers = msgspec.structs.replace(config.offers, catalogue=resolve(config.offers.catalogue))
    return msgspec.structs.replace(config, data=data, offers=offers)
