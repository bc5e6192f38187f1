"""Client addresses: parsing IPs as proxies and browsers write them, loopback hosts, and the
client address of a request behind trusted proxies.

Must not import litestar or model_export.
"""

from __future__ import annotations

import ipaddress
from typing import Any

__all__ = ["IP", "client_address", "host_of_authority", "loopback_host", "parse_ip"]

IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(text: str) -> IP | None:
    """An address from ``1.2.3.4``, ``1.2.3.4:80``, ``::1``, ``[::1]`` or ``[::1]:80``."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def loopback_host(host: str) -> bool:
    """``localhost``, ``*.localhost``, 127.0.0.0/8 or ``[::1]`` (a lowercase host, no port)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    ip = parse_ip(host)
    return ip is not None and ip.is_loopback


def host_of_authority(authority: str) -> str:
    """The lowercase host of a ``Host`` header value (``[::1]`` kept bracketed), without port."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        return authority[: authority.find("]") + 1]
    return authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority


def client_address(scope: dict[str, Any], forwarded: str | None, hops: int) -> str | None:
    """The socket peer, or with ``hops`` trusted proxies the ``hops``-th ``X-Forwarded-For``
    entry from the right (entries further left can be forged); as ``server.routes``."""
    client = scope.get("client")
    peer = str(client[0]) if client else None
    if hops <= 0:
        return peer
    entries = [e.strip() for e in (forwarded or "").split(",")]
    entries = [e for e in entries if e]
    return entries[-hops] if len(entries) >= hops else peer
