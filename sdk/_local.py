"""Local mode: decide in-process with a bundle, kept fresh from a server in the background.

:class:`LocalEngine` holds the current :class:`~sdk.Decider`, built from a bundle directory
(or a loaded bundle), from a server's ``/v1/bundle``, or a directory to start with and a server
to refresh from. Nothing happens at construction: the bundle loads on the first decision and
the refresher thread starts then (a forked child starts its own). A refused or unreachable new
bundle is logged and counted; the last good one keeps serving. Downloads go through
:mod:`sdk._download`'s checks (plain listed names, regular files, size caps, deadlines, HTTPS).
With trusted public keys, a downloaded bundle's signature is checked as soon as its
``manifest.json`` and ``signature.json`` are in, before any other file is fetched or used.

Must not import litestar or sklearn; numpy and onnxruntime come only through sdk's loaders.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import msgspec

from sdk._decider import Decider
from sdk._download import (
    INFO_MAX_BYTES,
    SIGNATURE_MAX_BYTES,
    Download,
    DownloadLimits,
    cached_copy_is_good,
    check_file_name,
    check_source_url,
    fetch_file,
    is_sha256,
    listed_files,
)
from sdk.bundle import (
    SIGNATURE_FILE,
    Bundle,
    PublicKeySpec,
    load_bundle,
    verify_signature,
)
from sdk.errors import BundleDownloadError, BundleSignatureError

__all__ = ["LocalEngine", "default_cache_dir", "public_keys_from_env"]

log = logging.getLogger("tailor")

_info_decoder = msgspec.json.Decoder(dict[str, Any])


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/tailor/bundles`` (``~/.cache/tailor/bundles`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tailor" / "bundles"


def public_keys_from_env() -> list[str] | None:
    """The comma-separated keys of ``TAILOR_BUNDLE_PUBLIC_KEYS`` (as the server reads them),
    or None when it is unset or blank."""
    keys = [k.strip() for k in os.environ.get("TAILOR_BUNDLE_PUBLIC_KEYS", "").split(",")]
    return [k for k in keys if k] or None


class LocalEngine:
    """The in-process decider of local mode, with its optional background refresh.

    Args:
        bundle: a bundle directory or a loaded bundle to start with, or None.
        source: a server's base URL to refresh from (``/v1/bundle``), or None.
        headers: HTTP headers for the server (the API key).
        refresh_interval: seconds between checks of the server.
        cache_dir: where downloaded bundles are kept (default :func:`default_cache_dir`).
        timeout: seconds the refresher waits for each read from the server.
        transport: an httpx transport for the refresher (tests).
        limits: size caps and deadline of downloads (default :meth:`DownloadLimits.from_env`).
        public_keys: trusted Ed25519 public keys (PEM paths or text, or base64 raw keys, as
            :func:`sdk.load_bundle` takes them); when given, every bundle (starting, cached or
            downloaded) must be signed by one of them. None: the keys of
            ``TAILOR_BUNDLE_PUBLIC_KEYS`` if set, else signatures are not required.

    Raises:
        InsecureURLError: ``source`` is plain ``http://`` to a host that is not loopback.
        ValueError: ``public_keys`` is empty, or one key instead of a list of keys.
    """

    def __init__(
        self,
        *,
        bundle: str | os.PathLike[str] | Bundle | None = None,
        source: str | None = None,
        headers: dict[str, str] | None = None,
        refresh_interval: float = 60.0,
        cache_dir: str | os.PathLike[str] | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        limits: DownloadLimits | None = None,
        public_keys: Sequence[PublicKeySpec] | None = None,
    ) -> None:
        if bundle is None and source is None:
            raise ValueError("local mode needs a bundle, a server to fetch it from, or both")
        if source is not None:
            check_source_url(source)
        if isinstance(public_keys, str | bytes | os.PathLike):
            raise ValueError("public_keys is a list of keys: pass [key] for one key")
        if public_keys is not None and not public_keys:
            raise ValueError("public_keys is empty: no bundle could ever be trusted")
        self.limits = limits if limits is not None else DownloadLimits.from_env()
        self._start = bundle
        keys = public_keys if public_keys is not None else public_keys_from_env()
        #: The trusted keys every bundle must be signed by (None: signatures not required).
        self.public_keys: list[PublicKeySpec] | None = list(keys) if keys is not None else None
        self.source = source.rstrip("/") if source else None
        self._headers = dict(headers or {})
        self.refresh_interval = refresh_interval
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._timeout = timeout
        self._transport = transport
        self.refreshes = 0
        self.refresh_failures = 0
        self.last_error: str | None = None
        self._refused: BundleSignatureError | None = None  # the last download, if refused so
        self._decider: Decider | None = None
        self._looked = False  # cache_dir searched for a starting bundle
        self._init_process_state()
        _live.add(self)

    def _init_process_state(self) -> None:
        self._lock = threading.Lock()
        self._attempted = threading.Event()  # a first download finished, well or not
        if self._decider is not None:
            self._attempted.set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- deciding ----------------------------------------------------------------------------

    def decider(self, wait: float = 0.0) -> Decider | None:
        """The current decider (loading the starting bundle on first use), or None when there
        is none yet after waiting ``wait`` seconds for the first download.

        Raises:
            BundleError: the starting bundle directory is refused.
            BundleSignatureError: there is no bundle yet and the server's was refused for its
                signature (a download that failed otherwise gives None: it is retried).
        """
        decider = self._decider
        if decider is None:
            with self._lock:
                if self._decider is None:
                    start = self._start
                    if start is not None:
                        self._decider = Decider(self._load_start(start))
                    elif not self._looked:
                        self._looked = True
                        self._decider = self._newest_cached()
                    if self._decider is not None:
                        self._attempted.set()
                decider = self._decider
        if self.source is not None and self._thread is None:
            self._start_refresher()
        if decider is None and wait > 0 and not self._attempted.is_set():
            self._attempted.wait(wait)
            decider = self._decider
        refused = self._refused
        if decider is None and refused is not None:
            raise BundleSignatureError(f"{self.source}/v1/bundle: {refused}") from refused
        return decider

    def _load_start(self, start: str | os.PathLike[str] | Bundle) -> Bundle:
        """The starting bundle, loaded (or, given loaded, its signature checked on disk)."""
        if not isinstance(start, Bundle):
            return load_bundle(Path(start), public_keys=self.public_keys)
        if self.public_keys is not None:
            verify_signature(start.path, self.public_keys)
            raw = (start.path / "manifest.json").read_bytes()
            if hashlib.sha256(raw).hexdigest() != start.digest:
                raise BundleSignatureError(
                    f"{start.path}: manifest.json changed since the bundle was loaded"
                )
        return start

    def _newest_cached(self) -> Decider | None:
        """The newest bundle in ``cache_dir`` that loads and verifies, or None."""
        try:
            found = [d for d in self.cache_dir.iterdir() if (d / "manifest.json").is_file()]
        except OSError:
            return None
        for directory in sorted(found, key=lambda d: d.stat().st_mtime, reverse=True):
            try:
                return Decider(load_bundle(directory, public_keys=self.public_keys))
            except Exception as exc:  # a damaged copy: try the next one
                log.warning("tailor: cached bundle %s refused: %s", directory.name, exc)
        return None

    @property
    def bundle(self) -> Bundle | None:
        """The bundle deciding now (None before the first one is loaded)."""
        decider = self._decider
        return decider.bundle if decider is not None else None

    # -- refreshing --------------------------------------------------------------------------

    def _start_refresher(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="tailor-bundle-refresh", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        with httpx.Client(
            base_url=self.source or "",
            headers=self._headers,
            timeout=self._timeout,
            transport=self._transport,
        ) as http:
            while not self._stop.is_set():
                self.refresh(http)
                self._stop.wait(self.refresh_interval)

    def refresh(self, http: httpx.Client) -> bool:
        """Check the server once; True when a new bundle was swapped in. Never raises."""
        try:
            changed = self._refresh(http)
        except Exception as exc:  # keep the last good bundle whatever went wrong
            self.refresh_failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._refused = exc if isinstance(exc, BundleSignatureError) else None
            log.warning("tailor: bundle refresh from %s failed: %s", self.source, self.last_error)
            return False
        finally:
            self._attempted.set()
        self.last_error = None
        self._refused = None
        return changed

    def _refresh(self, http: httpx.Client) -> bool:
        current = self._decider.bundle.digest if self._decider is not None else None
        headers = {"if-none-match": f'"{current}"'} if current else {}
        with Download(http, "/v1/bundle", self.limits, headers) as answer:
            if answer.status == 304:
                return False
            raw = answer.read(INFO_MAX_BYTES)
        info = _info_decoder.decode(raw)
        digest = str(info.get("digest", ""))
        files = info.get("files")
        if not is_sha256(digest) or not isinstance(files, dict):
            raise BundleDownloadError("GET /v1/bundle answered without a digest and a file list")
        for name in files:
            check_file_name(name)  # before anything touches the disk
        if digest == current:
            return False
        if self.public_keys is not None and SIGNATURE_FILE not in files:
            raise BundleSignatureError(
                f"the server's bundle {digest[:12]} is unsigned (GET /v1/bundle lists no "
                f"{SIGNATURE_FILE}) and trusted keys are configured"
            )
        directory = self._download(http, digest, files)
        try:
            bundle = load_bundle(directory, public_keys=self.public_keys)
            if bundle.digest != digest:
                raise BundleDownloadError(
                    f"downloaded bundle has digest {bundle.digest}, expected {digest}"
                )
            decider = Decider(bundle)
        except Exception:
            shutil.rmtree(directory, ignore_errors=True)  # never start from a refused copy
            raise
        with self._lock:
            self._decider = decider
        self.refreshes += 1
        log.info("tailor: local bundle is now %s", bundle.manifest.model_version)
        return True

    def _download(self, http: httpx.Client, digest: str, offered: dict[str, Any]) -> Path:
        """The bundle ``digest`` in the cache: the cached copy when every file checks out,
        else downloaded into a fresh temporary directory and renamed into place. With trusted
        keys, the signature is checked once the manifest and signature are in, before any
        other file is fetched."""
        signature = offered.get(SIGNATURE_FILE)
        if signature is not None and not is_sha256(signature):
            raise BundleDownloadError(f"GET /v1/bundle lists {SIGNATURE_FILE} without a sha256")
        target = self.cache_dir / digest
        if cached_copy_is_good(target, digest, self.limits, signature):
            return target
        if target.is_symlink():
            target.unlink()  # never follow a link planted in the cache
        elif target.exists():
            shutil.rmtree(target, ignore_errors=True)  # a damaged copy: fetch it again
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=self.cache_dir))
        try:
            budget = [self.limits.max_total_bytes]
            manifest = fetch_file(http, tmp, "manifest.json", digest, self.limits, budget)
            if signature is not None:
                cap = SIGNATURE_MAX_BYTES
                fetch_file(http, tmp, SIGNATURE_FILE, signature, self.limits, budget, cap)
            if self.public_keys is not None:
                verify_signature(tmp, self.public_keys)  # over the exact manifest bytes
            files = listed_files(manifest)
            signed = {SIGNATURE_FILE: signature} if signature is not None else {}
            if {**files, "manifest.json": digest, **signed} != offered:
                raise BundleDownloadError(
                    "GET /v1/bundle lists other files than the bundle's manifest.json"
                )
            for name, sha in sorted(files.items()):
                fetch_file(http, tmp, name, sha, self.limits, budget)
            try:
                tmp.rename(target)
            except OSError:  # another process won the race: use its copy
                if not (target / "manifest.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def close(self, timeout: float = 5.0) -> None:
        """Stop the refresher."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        _live.discard(self)

    def _after_fork_in_child(self) -> None:
        self._init_process_state()


_live: weakref.WeakSet[LocalEngine] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for engine in list(_live):
        engine._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
