"""Hot bundle reload: :class:`BundleHolder` owns the serving :class:`sdk.Decider`, loads and
verifies a changed bundle (a directory or a ``LIVE`` symlink) and swaps it in with one attribute
assignment; a refused bundle leaves the old one serving and its reason is kept. With trusted
public keys, a bundle must be signed by one of them. Each worker polls on its own;
``POST /v1/admin/reload`` checks at once.

Must not import model_export.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sdk import BundleError, Decider, load_bundle
from sdk.bundle import SIGNATURE_FILE

__all__ = ["BundleHolder", "ReloadResult"]

log = logging.getLogger("tailor.server")


@dataclass(frozen=True)
class ReloadResult:
    """What a check did: ``changed`` (a new bundle is serving), ``refused`` (why not)."""

    changed: bool
    version: str | None
    refused: str | None = None


def _fingerprint(path: Path) -> tuple[str, int, int, int] | None:
    """Resolved target, manifest mtime/size and signature mtime (0 when unsigned): cheap to
    compute on every poll, and changed when a bundle is signed in place."""
    try:
        target = path.resolve()
        stat = (target / "manifest.json").stat()
    except OSError:
        return None
    try:
        signed = (target / SIGNATURE_FILE).stat().st_mtime_ns
    except OSError:
        signed = 0
    return (str(target), stat.st_mtime_ns, stat.st_size, signed)


class BundleHolder:
    """The serving decider of one worker process, and its reload logic.

    Args:
        path: the bundle directory or ``LIVE`` symlink.
        on_loaded: called with the model version after each successful (re)load.
        on_refused: called with the reason after each refused bundle.
        public_keys: trusted Ed25519 public keys; when given, unsigned bundles are refused.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        on_loaded: Callable[[str], None] | None = None,
        on_refused: Callable[[str], None] | None = None,
        public_keys: list[str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.public_keys = public_keys
        self.decider: Decider | None = None
        self.error: str | None = None
        self.loaded_at: datetime | None = None
        self.reloads = 0
        self.refusals = 0
        self._seen: tuple[str, int, int, int] | None = None
        self._lock = threading.Lock()
        self._on_loaded = on_loaded
        self._on_refused = on_refused

    @property
    def version(self) -> str | None:
        """The serving model version, or None before the first verified bundle."""
        return self.decider.bundle.version if self.decider is not None else None

    def check(self, *, force: bool = False) -> ReloadResult:
        """Load the bundle if it changed since the last check (or ``force``); thread-safe."""
        with self._lock:
            seen = _fingerprint(self.path)
            if not force and seen is not None and seen == self._seen:
                return ReloadResult(changed=False, version=self.version)
            self._seen = seen
            try:
                bundle = load_bundle(self.path, public_keys=self.public_keys)
            except BundleError as exc:
                self.error = str(exc)
                self.refusals += 1
                serving = self.version or "nothing"
                log.error("bundle at %s refused (still serving %s): %s", self.path, serving, exc)
                if self._on_refused:
                    self._on_refused(str(exc))
                return ReloadResult(changed=False, version=self.version, refused=str(exc))
            if self.decider is not None and bundle.digest == self.decider.bundle.digest:
                self.error = None
                return ReloadResult(changed=False, version=self.version)
            self.decider = Decider(bundle)  # the swap: one reference assignment
            self.error = None
            self.loaded_at = datetime.now(UTC)
            self.reloads += 1
            log.info("serving bundle %s from %s", bundle.version, bundle.path)
            if self._on_loaded:
                self._on_loaded(bundle.version)
            return ReloadResult(changed=True, version=bundle.version)
