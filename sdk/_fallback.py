"""Fallback decisions: what the client answers when it cannot get a real one.

A fallback decision has the schema's shape: each slot gets its default content (the caller's
own, or the ``default`` variant of a bundle's catalogue, read from ``manifest.json`` alone). It
is not personalized, ranks no offers, says why in ``reasons`` (``fallback.<cause>``), and its
decision id starts with ``fallback-`` and its model version is ``fallback``.

Must not import numpy, onnxruntime, litestar or sklearn.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from sdk._variants import slot_decision
from sdk.bundle import _read_manifest
from sdk.manifest import Manifest
from sdk.schema import (
    Content,
    DecideRequest,
    Decision,
    Lifecycle,
    Reason,
    Signals,
    SlotDecision,
)

__all__ = ["Fallback"]

#: ``model_version`` of every fallback decision.
FALLBACK_VERSION = "fallback"


class Fallback:
    """Default content per slot, answered when no decision can be had.

    Args:
        slots: slot id -> the content (or a whole :class:`SlotDecision`) to show.

    Build one from a bundle with :meth:`from_bundle` or :meth:`from_manifest`; the caller's
    ``slots`` win over the bundle's for the same slot id.
    """

    def __init__(self, slots: Mapping[str, Content | SlotDecision] | None = None) -> None:
        self._slots: dict[str, SlotDecision] = {}
        for slot_id, value in (slots or {}).items():
            if isinstance(value, Content):
                value = SlotDecision(
                    variant_id="default",
                    offer_id=None,
                    content=value,
                    propensity=1.0,
                    reason="fallback default",
                )
            self._slots[slot_id] = value

    @classmethod
    def from_manifest(
        cls, manifest: Manifest, slots: Mapping[str, Content | SlotDecision] | None = None
    ) -> Fallback:
        """The default variant of every catalogue slot, then the caller's ``slots``."""
        defaults: dict[str, Content | SlotDecision] = {}
        for slot in manifest.slots:
            variant = next(v for v in slot.variants if v.id == slot.default)
            defaults[slot.id] = slot_decision(variant, "fallback: the catalogue's default variant")
        defaults.update(slots or {})
        return cls(defaults)

    @classmethod
    def from_bundle(
        cls, path: str | Path, slots: Mapping[str, Content | SlotDecision] | None = None
    ) -> Fallback:
        """Read ``manifest.json`` of the bundle at ``path`` (no ONNX, no hashes checked: the
        catalogue is all that is used).

        Raises:
            BundleFormatError: the manifest is missing or invalid.
        """
        manifest, _ = _read_manifest(Path(path))
        return cls.from_manifest(manifest, slots)

    @property
    def slots(self) -> dict[str, SlotDecision]:
        """The default of each slot (a copy)."""
        return dict(self._slots)

    def decision(self, request: DecideRequest, cause: str, message: str) -> Decision:
        """The fallback decision for ``request``; ``cause`` becomes the reason code's suffix."""
        wanted = request.slots or list(self._slots)
        slots = {s: self._slots[s] for s in wanted if s in self._slots}
        now = request.timestamp or datetime.now(UTC)
        screen = request.context.screen
        return Decision(
            decision_id=f"fallback-{uuid.uuid4().hex}",
            model_version=FALLBACK_VERSION,
            visitor_id=request.visitor_id,
            session_id=request.session_id,
            personalized=False,
            persona=None,
            segment=None,
            lifecycle=Lifecycle(stage="unknown", rule="fallback"),
            offers=[],
            slots=slots,
            signals=Signals(
                device_type="unknown",
                os=None,
                browser=None,
                touch=bool(screen.touch),
                referrer_class="unknown",
                referrer_source=None,
                search_terms=None,
                country=None,
                local_hour=now.hour,
                local_weekday=now.weekday(),
            ),
            reasons=[Reason(code=f"fallback.{cause}", message=message)],
            ttl=0,
        )
