"""Connection limits uvicorn lacks: a deadline for a request's headers and a cap on their size.

uvicorn's keep-alive timeout stops at the first byte of a request, so a client sending headers
one byte at a time would hold a connection (and a slot of ``limit_concurrency``) for ever.
:class:`HeaderLimitedProtocol` closes a connection whose request line and headers are not
complete within ``TAILOR_HEADER_TIMEOUT`` seconds or exceed ``TAILOR_MAX_HEADER_BYTES``;
``python -m server`` sets both from :class:`server.settings.Settings` and names this class as
uvicorn's ``http`` protocol (an import string, so every worker process builds it too).

Must not import litestar or model_export.
"""

from __future__ import annotations

import asyncio
import os

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["DEFAULT_HEADER_TIMEOUT", "DEFAULT_MAX_HEADER_BYTES", "HeaderLimitedProtocol"]

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_MAX_HEADER_BYTES = 64 * 1024


class HeaderLimitedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline and a header size cap."""

    header_timeout = float(os.environ.get("TAILOR_HEADER_TIMEOUT", DEFAULT_HEADER_TIMEOUT))
    max_header_bytes = int(os.environ.get("TAILOR_MAX_HEADER_BYTES", DEFAULT_MAX_HEADER_BYTES))
    _header_timer: asyncio.TimerHandle | None = None
    _header_bytes = 0

    def _arm(self) -> None:
        self._disarm()
        self._header_bytes = 0
        self._header_timer = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expired(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        reading_headers = self._header_timer is not None
        super().data_received(data)
        if reading_headers and self._header_timer is not None:  # still no complete headers
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes and not self.transport.is_closing():
                self._disarm()
                self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
