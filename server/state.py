"""Per-process server state: the decider, the geo resolver and the static assets.

One :class:`Engine` lives on ``app.state.engine`` per worker process, created in the lifespan.

Must not import model_export.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from sdk import Decider
from sdk._geo import GeoResolver
from server.settings import Settings

__all__ = ["Asset", "Engine"]


@dataclass(frozen=True)
class Asset:
    """A static file held in memory with its strong ETag."""

    body: bytes
    media_type: str
    etag: str


@dataclass
class Engine:
    """What handlers need: settings, the current decider (None until a bundle is verified),
    why the bundle was refused, the geo resolver and static assets."""

    settings: Settings
    decider: Decider | None = None
    error: str | None = None
    geo: GeoResolver | None = None
    assets: dict[str, Asset] = field(default_factory=dict)

    def load_static(self, directory: Path) -> None:
        """Read the demo page and the built tag into memory (missing files are skipped)."""
        types = {
            "demo.html": "text/html; charset=utf-8",
            "tailor.js": "text/javascript; charset=utf-8",
            "tailor.js.map": "application/json",
        }
        for name, media_type in types.items():
            path = directory / name
            if path.is_file():
                body = path.read_bytes()
                etag = hashlib.sha256(body).hexdigest()[:16]
                self.assets[name] = Asset(body=body, media_type=media_type, etag=etag)
