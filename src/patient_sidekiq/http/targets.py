"""Where a request goes: a URL split once into origin, ``host`` header and request target.

Shared by the HTTP/1.1 fast path (which sends without building an ``httpx.Request``) and the
SigV4 signer (which must sign the ``host`` and path exactly as they are sent).

Touches no Redis keys.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

__all__ = ["DEFAULT_PORTS", "DirectTarget", "Origin", "direct_target"]

DEFAULT_PORTS: Final = {"http": 80, "https": 443}

Origin = tuple[str, str, int]
"""(scheme, host, port): what a keep-alive connection is reused for."""


@dataclass(frozen=True, slots=True)
class DirectTarget:
    """Where the fast path sends a request: origin, ``host`` header, request target."""

    origin: Origin
    host_header: str
    path: str


def direct_target(url: str) -> DirectTarget | None:
    """Split a plain absolute URL for the fast path; None when httpx should send it.

    Only printable-ASCII URLs without userinfo (what Ruby's ``URI`` accepts) take the direct
    path; anything needing normalisation (IDNA, percent-encoding, credentials) goes through
    ``httpx.URL`` as before. Cached (the answer is immutable): many jobs of a batch go to
    one URL. Long URLs are not, so the cache stays small.
    """
    if len(url) > _CACHED_URL_LENGTH:
        return _split(url)
    return _cached_split(url)


_CACHED_URL_LENGTH: Final = 2048


def _split(url: str) -> DirectTarget | None:
    if not url.isascii() or not url.isprintable() or " " in url:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    default = DEFAULT_PORTS.get(scheme)
    if default is None or not host or "@" in parts.netloc:
        return None
    bracketed = f"[{host}]" if ":" in host else host
    host_header = bracketed if port is None or port == default else f"{bracketed}:{port}"
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return DirectTarget((scheme, host, port or default), host_header, path)


_cached_split: Final = functools.lru_cache(maxsize=1024)(_split)
