"""Keys out of the logs: a :class:`logging.Filter` that redacts credentials in every record a
handler emits (uvicorn's access and error logs, the server's own), whatever the route or status.

Redacted: the values of the ``key``, ``api_key`` and ``token`` query parameters (also
percent-encoded or in any case) and the credentials of ``Authorization`` and ``X-Tailor-Key``
header values. :func:`log_config` is uvicorn's logging configuration with the filter on every
handler.

Must not import litestar or model_export.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

__all__ = ["REDACTED", "RedactingFilter", "log_config", "redact"]

REDACTED = "redacted"
_QUERY = re.compile(r"(?i)((?:^|[?&;\s\"'])(?:key|api_key|api%5fkey|token)=)[^&#\s\"']*")
_HEADER = re.compile(
    r"(?i)((?:authorization|x-tailor-key)[\"']?\s*[:=,]\s*[\"']?(?:bearer\s+|basic\s+)?)"
    r"[^\s\"',;)]+"
)


def redact(text: str) -> str:
    """``text`` with credentials in query strings and auth headers replaced by ``redacted``."""
    if "=" not in text and ":" not in text:
        return text
    return _HEADER.sub(r"\1" + REDACTED, _QUERY.sub(r"\1" + REDACTED, text))


class RedactingFilter(logging.Filter):
    """Rewrites each record's message with :func:`redact`; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info and record.exc_text is None and record.exc_info[0] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def log_config(base: dict[str, Any]) -> dict[str, Any]:
    """A copy of uvicorn's ``LOGGING_CONFIG`` (``base``) with :class:`RedactingFilter` on every
    handler and the server's own loggers (``tailor.*``, the root) logging through it too."""
    config = copy.deepcopy(base)
    config.setdefault("filters", {})["redact"] = {"()": f"{__name__}.RedactingFilter"}
    config.setdefault("formatters", {})["plain"] = {
        "format": "%(asctime)s %(name)s %(levelname)s %(message)s"
    }
    handlers = config.setdefault("handlers", {})
    handlers["plain"] = {
        "class": "logging.StreamHandler",
        "formatter": "plain",
        "stream": "ext://sys.stderr",
    }
    for handler in handlers.values():
        handler["filters"] = [*handler.get("filters", []), "redact"]
    config["root"] = {"handlers": ["plain"], "level": "INFO"}
    return config
