"""Local mode's guarded bundle download: what a server may offer and how much of it is read.

A server's answer is untrusted until its hashes check out, so names are checked before the disk
is touched (one plain file name, listed in the manifest), only regular files are opened, every
file and the bundle in total are capped in size, each download has a deadline, and plain
``http://`` is accepted only for loopback servers. ``signature.json`` (the one file a manifest
cannot list) is fetched and cached beside the manifest when the server offers it.

Must not import litestar, numpy or onnxruntime.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import stat
import time
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec

from sdk.bundle import SIGNATURE_FILE
from sdk.errors import (
    BundleDownloadError,
    BundleTimeoutError,
    BundleTooLargeError,
    InsecureURLError,
    SecretKeyRequiredError,
    UnsafeBundleFileError,
)

__all__ = [
    "INFO_MAX_BYTES",
    "SIGNATURE_MAX_BYTES",
    "Download",
    "DownloadLimits",
    "cached_copy_is_good",
    "check_file_name",
    "check_source_url",
    "fetch_file",
    "is_sha256",
    "listed_files",
]

#: One plain file name: letters, digits, ``_`` and ``-`` in dot-separated parts, no leading dot.
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*")
_MAX_NAME = 128
_HEX64 = re.compile(r"[0-9a-f]{64}")
#: ``GET /v1/bundle`` answers a few hundred bytes; more is refused.
INFO_MAX_BYTES = 1 << 20
#: ``signature.json`` is about 200 bytes; more is refused.
SIGNATURE_MAX_BYTES = 64 << 10


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


class DownloadLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Caps on what local mode downloads from a server.

    Attributes:
        max_file_bytes: the largest single bundle file.
        max_total_bytes: the largest bundle, all files together.
        file_timeout: seconds one file's download may take from request to last byte.
    """

    max_file_bytes: int = 64 << 20
    max_total_bytes: int = 256 << 20
    file_timeout: float = 120.0

    @classmethod
    def from_env(cls) -> DownloadLimits:
        """The defaults, overridden by ``TAILOR_BUNDLE_MAX_FILE_BYTES``,
        ``TAILOR_BUNDLE_MAX_TOTAL_BYTES`` and ``TAILOR_BUNDLE_FILE_TIMEOUT``."""
        base = cls()
        return cls(
            max_file_bytes=int(_env_number("TAILOR_BUNDLE_MAX_FILE_BYTES", base.max_file_bytes)),
            max_total_bytes=int(_env_number("TAILOR_BUNDLE_MAX_TOTAL_BYTES", base.max_total_bytes)),
            file_timeout=_env_number("TAILOR_BUNDLE_FILE_TIMEOUT", base.file_timeout),
        )


class _FileList(msgspec.Struct, frozen=True, kw_only=True):
    files: dict[str, str]


_file_list_decoder = msgspec.json.Decoder(_FileList)


def is_sha256(value: object) -> bool:
    """True for a lowercase hex sha256."""
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def check_file_name(name: object) -> str:
    """``name`` when it is one plain file name, else :class:`UnsafeBundleFileError`."""
    if not isinstance(name, str) or len(name) > _MAX_NAME or _FILE_NAME.fullmatch(name) is None:
        raise UnsafeBundleFileError(f"unsafe bundle file name {name!r}")
    return name


def check_source_url(url: str) -> None:
    """Refuse a server URL that is neither ``https://`` nor ``http://`` to a loopback host."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return
    if parts.scheme != "http":
        raise InsecureURLError(f"local mode needs an https:// server URL, not {url!r}")
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InsecureURLError(
            f"local mode refuses plain http:// to {host!r}: bundles decide what visitors see, "
            "so fetch them over https:// (plain http:// is accepted for loopback only)"
        )


def listed_files(manifest: bytes) -> dict[str, str]:
    """The ``files`` of a downloaded manifest, every name and hash checked (it never lists
    itself or ``signature.json``, which signs its bytes)."""
    try:
        files = _file_list_decoder.decode(manifest).files
    except msgspec.DecodeError as exc:
        raise BundleDownloadError(f"downloaded manifest.json has no file list: {exc}") from exc
    for name, sha in files.items():
        if check_file_name(name) in ("manifest.json", SIGNATURE_FILE) or not is_sha256(sha):
            raise BundleDownloadError(f"manifest.json lists {name!r} with hash {sha!r}")
    return files


class Download:
    """A streamed GET with a deadline: ``status``, then :meth:`read` up to a cap.

    Raises:
        SecretKeyRequiredError: the server answered 401 or 403 (``/v1/bundle`` is secret-only).
        BundleTimeoutError: the server did not answer, or not completely, before the deadline.
        httpx.HTTPStatusError: any other error status.
    """

    def __init__(
        self,
        http: httpx.Client,
        path: str,
        limits: DownloadLimits,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._request = http.build_request("GET", path, headers=headers)
        self._http = http
        self._deadline = time.monotonic() + limits.file_timeout
        self._timeout = limits.file_timeout
        self._response: httpx.Response | None = None

    def __enter__(self) -> Download:
        try:
            response = self._http.send(self._request, stream=True)
        except httpx.TimeoutException as exc:
            raise BundleTimeoutError(f"GET {self._request.url.path}: {exc}") from exc
        try:
            if response.status_code in (401, 403):
                raise SecretKeyRequiredError(
                    f"GET {self._request.url.path} answered {response.status_code}: local mode "
                    "fetches bundles with a secret key (sk_...); public keys may not read them"
                )
            if response.status_code != 304:
                response.raise_for_status()
        except Exception:
            response.close()
            raise
        self._response = response
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._response is not None:
            self._response.close()

    @property
    def status(self) -> int:
        assert self._response is not None
        return self._response.status_code

    def chunks(self, cap: int) -> Any:
        """The body in chunks, refused past ``cap`` bytes or past the deadline."""
        assert self._response is not None
        path = self._request.url.path
        length = self._response.headers.get("content-length", "")
        if length.isdigit() and int(length) > cap:
            raise BundleTooLargeError(f"GET {path}: {length} bytes is over the cap of {cap}")
        seen = 0
        try:
            for chunk in self._response.iter_bytes():
                seen += len(chunk)
                if seen > cap:
                    raise BundleTooLargeError(f"GET {path}: over the cap of {cap} bytes")
                if time.monotonic() > self._deadline:
                    raise BundleTimeoutError(f"GET {path}: not complete in {self._timeout} s")
                yield chunk
        except httpx.TimeoutException as exc:
            raise BundleTimeoutError(f"GET {path}: {exc}") from exc

    def read(self, cap: int) -> bytes:
        """The whole body, at most ``cap`` bytes."""
        return b"".join(self.chunks(cap))


def fetch_file(
    http: httpx.Client,
    directory: Path,
    name: str,
    sha: str,
    limits: DownloadLimits,
    budget: list[int],
    cap: int | None = None,
) -> bytes:
    """Download bundle file ``name`` into ``directory`` (a new file, never a link), checked
    against ``sha``; ``budget`` holds the bytes the whole bundle may still take, ``cap`` a
    tighter limit for this file. Returns the bytes of ``manifest.json`` (the only file read
    back), else ``b""``."""
    check_file_name(name)
    digest = hashlib.sha256()
    kept: list[bytes] = []
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    most = min(limits.max_file_bytes, budget[0], cap if cap is not None else budget[0])
    with Download(http, f"/v1/bundle/files/{name}", limits) as answer:
        fd = os.open(directory / name, flags, 0o644)
        with os.fdopen(fd, "wb") as out:
            for chunk in answer.chunks(most):
                digest.update(chunk)
                out.write(chunk)
                if name == "manifest.json":
                    kept.append(chunk)
                budget[0] -= len(chunk)
    if digest.hexdigest() != sha:
        raise BundleDownloadError(f"bundle file {name} does not match its sha256")
    return b"".join(kept)


def _sha256_of_regular(path: Path, cap: int) -> tuple[str, bytes]:
    """The sha256 and bytes of ``path``, opened without following a link, only when it is a
    regular file of at most ``cap`` bytes (so never a device, FIFO or socket)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeBundleFileError(f"cached bundle file {path.name} is not a regular file")
        if info.st_size > cap:
            raise BundleTooLargeError(f"cached bundle file {path.name} is over {cap} bytes")
        data = fh.read(cap + 1)
    return hashlib.sha256(data).hexdigest(), data


def cached_copy_is_good(
    target: Path, digest: str, limits: DownloadLimits, signature: str | None = None
) -> bool:
    """True when ``target`` is a real directory whose manifest has ``digest`` and whose listed
    files are regular files with their listed hashes (names checked before any is opened);
    with ``signature`` (its sha256), ``signature.json`` must be there with that hash too."""
    if target.is_symlink() or not target.is_dir():
        return False
    try:
        sha, manifest = _sha256_of_regular(target / "manifest.json", limits.max_file_bytes)
        if sha != digest:
            return False
        files = listed_files(manifest)  # every name checked before one is opened
        if signature is not None:
            files = {**files, SIGNATURE_FILE: signature}
        return all(
            _sha256_of_regular(target / name, limits.max_file_bytes)[0] == want
            for name, want in files.items()
        )
    except (OSError, BundleDownloadError):
        return False
