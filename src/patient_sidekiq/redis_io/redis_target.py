"""How to reach Redis: one URL, optionally behind Redis Sentinel.

Role: the one place that turns configuration into redis-py connection pools. Everything that
opens a connection (``RedisBridge``, ``ReliableFetch``'s blocking waiter) asks a
:class:`RedisTarget` for a pool or a client, so plain, TLS, unix-socket and Sentinel setups
behave alike everywhere. Building a target, a pool or a client opens no connection; redis-py
connects on first use (and, behind Sentinel, asks a sentinel for the master's address every
time it connects, so a failover is followed on the next reconnect).

Keys: none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, cast
from urllib.parse import unquote_plus, urlsplit

import redis
from redis.connection import SSLConnection, parse_url
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection

from patient_sidekiq.errors import ConfigurationError

__all__ = ["REDIS_SCHEMES", "RedisTarget", "as_target", "hide_password"]

REDIS_SCHEMES: Final = ("redis", "rediss", "unix")
"""URL schemes redis-py's ``from_url`` understands (and therefore we accept)."""

_HIDDEN: Final = "***"
# Query parameters of a Redis URL that carry credentials.
_SECRET_PARAMS: Final = frozenset({"password"})


@dataclass(frozen=True)
class RedisTarget:
    """Where Redis is: ``url`` alone, or a Sentinel-managed master.

    ``url`` is what redis-py's ``from_url`` reads (``redis://``, ``rediss://``, ``unix://``,
    with db, credentials and query options). With ``sentinels`` (``(host, port)`` pairs) the
    master named ``sentinel_master`` is looked up through them, and ``url`` only contributes
    the db, username, password, TLS (``rediss``) and query options; its host is ignored.
    """

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str | None = None

    def __post_init__(self) -> None:
        scheme = urlsplit(self.url).scheme
        if scheme not in REDIS_SCHEMES:
            raise ConfigurationError(
                f"Redis URL must start with redis://, rediss:// or unix://, not {self.url!r}"
            )
        object.__setattr__(self, "sentinels", tuple((h, int(p)) for h, p in self.sentinels))
        if self.sentinels and not self.sentinel_master:
            raise ConfigurationError("Redis sentinels are configured but no sentinel master name")
        if self.sentinel_master and not self.sentinels:
            raise ConfigurationError(
                f"sentinel master {self.sentinel_master!r} is configured but no sentinels"
            )
        if self.sentinels and scheme == "unix":
            raise ConfigurationError("a unix:// Redis URL cannot be combined with sentinels")

    def connection_pool(self, **kwargs: Any) -> redis.ConnectionPool:
        """Return a new (unconnected) pool; ``kwargs`` are connection options.

        As with ``from_url``, options in the URL's query win over ``kwargs``.
        """
        if not self.sentinels:
            return redis.ConnectionPool.from_url(self.url, **kwargs)
        options = dict(kwargs)
        url_options = _parse_url(self.url)
        # The address comes from the sentinels; only TLS survives from the connection class.
        for key in ("host", "port", "path"):
            url_options.pop(key, None)
        tls = url_options.pop("connection_class", None) is SSLConnection
        options.update(url_options)
        options["connection_class"] = _SentinelSSLConnection if tls else _SentinelConnection
        # Sentinels get the socket options only: their own credentials (if any) are not the
        # master's, which is redis-py's default too.
        manager = cast(Callable[..., Sentinel], Sentinel)(
            list(self.sentinels),
            sentinel_kwargs={k: v for k, v in options.items() if k.startswith("socket_")},
        )
        assert self.sentinel_master is not None  # checked in __post_init__
        return _SentinelPool(self.sentinel_master, manager, is_master=True, **options)

    def client(self, **kwargs: Any) -> redis.Redis:
        """Return a new (unconnected) client whose ``close()`` also closes its pool."""
        return redis.Redis.from_pool(self.connection_pool(**kwargs))

    def describe(self) -> str:
        """Return where Redis is, for logs, with every password replaced by ``***``."""
        if not self.sentinels:
            return hide_password(self.url)
        db = _parse_url(self.url).get("db", 0)
        via = ",".join(_host_port(host, port) for host, port in self.sentinels)
        tls = " (TLS)" if urlsplit(self.url).scheme == "rediss" else ""
        return f"sentinel {self.sentinel_master} via {via} db {db}{tls}"


def _parse_url(url: str) -> dict[str, Any]:
    """redis-py's own reading of a URL (host, port, db, credentials, query options)."""
    options: dict[str, Any] = cast(Callable[[str], dict[str, Any]], parse_url)(url)
    return options


def as_target(target: str | RedisTarget) -> RedisTarget:
    """Return ``target`` as a :class:`RedisTarget` (a plain URL string becomes one)."""
    return target if isinstance(target, RedisTarget) else RedisTarget(target)


class _SentinelPool(SentinelConnectionPool):
    """A master pool that also closes its sentinel connections when fully disconnected.

    redis-py leaves the sentinel clients' sockets to the garbage collector; a worker that
    closes its pools at shutdown should not leak them.
    """

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]
        self._manager = sentinel_manager

    def disconnect(self, inuse_connections: bool = True) -> None:
        super().disconnect(inuse_connections)
        if inuse_connections:  # a full close, not the idle-connection reset of a failover
            for sentinel in self._manager.sentinels:
                sentinel.connection_pool.disconnect()


class _SentinelConnection(SentinelManagedConnection):
    """A master connection that asks the sentinels where the master is however it connects.

    redis-py only looks the master up in ``connect()``; ``send_packed_command`` on a fresh
    connection (what :class:`~patient_sidekiq.redis_io.redis_bridge.RedisBridge` relies on to
    reconnect lazily) would otherwise dial the URL's host instead of the master.
    """

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if self._sock is None:
            self.connect_to(self.connection_pool.get_master_address())  # type: ignore[no-untyped-call]
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


class _SentinelSSLConnection(_SentinelConnection, SSLConnection):
    """:class:`_SentinelConnection` over TLS (a ``rediss://`` URL)."""


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def hide_password(url: str) -> str:
    """Return ``url`` with its password (userinfo or ``password=`` query) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, hostinfo = netloc.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    if at and colon:  # "user@host" alone is a username (redis-py's reading), not a secret
        netloc = f"{user}:{_HIDDEN}@{hostinfo}"
    query = "&".join(
        f"{name}={_HIDDEN}" if unquote_plus(name) in _SECRET_PARAMS else f"{name}{eq}{value}"
        for name, eq, value in (item.partition("=") for item in parts.query.split("&") if item)
    )
    # Built by hand: urlunsplit would turn "unix:///path" into "unix:/path".
    text = f"{parts.scheme}://{netloc}{parts.path}"
    return f"{text}?{query}" if query else text
