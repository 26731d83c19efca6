"""RedisTarget: pools and clients for plain, unix-socket and Sentinel setups (real servers)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.connection import SSLConnection
from redis.sentinel import SentinelConnectionPool, SentinelManagedConnection

from patient_sidekiq.errors import ConfigurationError, RedisUnavailableError
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.redis_io.redis_target import RedisTarget, as_target
from patient_sidekiq.sidekiq.fetch import ReliableFetch
from patient_sidekiq.sidekiq.unit_of_work import QueueOrder
from tests.support.programs import free_port, require_binary, stop_process
from tests.support.redis import RedisServer

# --- no Redis ---


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("rediss://app:s3cret@host:6380/2", "rediss://app:***@host:6380/2"),
        ("redis://app@host/1", "redis://app@host/1"),  # a username alone is no secret
        ("unix:///run/redis.sock?db=3&password=pw", "unix:///run/redis.sock?db=3&password=***"),
    ],
)
def test_describe_hides_passwords(url: str, shown: str) -> None:
    assert RedisTarget(url).describe() == shown


def test_describe_sentinel() -> None:
    target = RedisTarget(
        "redis://:pw@ignored/2",
        sentinels=(("h1", 26379), ("::1", 26380)),
        sentinel_master="mymaster",
    )
    assert target.describe() == "sentinel mymaster via h1:26379,[::1]:26380 db 2"
    tls = RedisTarget("rediss://ignored/0", (("h1", 26379),), "m")
    assert tls.describe() == "sentinel m via h1:26379 db 0 (TLS)"


@pytest.mark.parametrize(
    ("url", "sentinels", "master", "message"),
    [
        ("http://localhost", (), None, "redis://, rediss:// or unix://"),
        ("localhost:6379", (), None, "redis://, rediss:// or unix://"),
        ("redis://x", (("h", 26379),), None, "no sentinel master"),
        ("redis://x", (), "mymaster", "no sentinels"),
        ("unix:///tmp/s.sock", (("h", 26379),), "m", "unix://"),
    ],
)
def test_invalid_targets(
    url: str, sentinels: tuple[tuple[str, int], ...], master: str | None, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        RedisTarget(url, sentinels, master)


def test_as_target_and_plain_pool_options() -> None:
    target = as_target("redis://:pw@example.invalid:7000/4")
    assert as_target(target) is target
    pool = target.connection_pool(protocol=2)
    assert isinstance(pool, redis.ConnectionPool)
    options = pool.connection_kwargs
    assert (options["host"], options["port"], options["db"]) == ("example.invalid", 7000, 4)
    assert (options["password"], options["protocol"]) == ("pw", 2)
    # The URL's own query wins over keyword options, as with from_url.
    assert (
        RedisTarget("redis://h/0?protocol=3")
        .connection_pool(protocol=2)
        .connection_kwargs["protocol"]
        == 3
    )


def test_sentinel_pool_takes_credentials_from_the_url() -> None:
    target = RedisTarget("rediss://app:pw@ignored:1/5", (("127.0.0.1", 1),), "mymaster")
    pool = target.connection_pool(protocol=2, socket_timeout=3)
    assert isinstance(pool, SentinelConnectionPool)
    options = pool.connection_kwargs
    assert (options["db"], options["username"], options["password"]) == (5, "app", "pw")
    assert options["protocol"] == 2
    assert "host" not in options  # the master's address comes from the sentinels
    assert issubclass(pool.connection_class, SentinelManagedConnection)
    assert issubclass(pool.connection_class, SSLConnection)  # rediss:// keeps TLS
    plain = RedisTarget("redis://ignored/0", (("127.0.0.1", 1),), "m").connection_pool()
    assert not issubclass(plain.connection_class, SSLConnection)
    pool.disconnect()


# --- real servers ---


@pytest.mark.integration
async def test_bridge_through_a_unix_socket_target(redis_server: RedisServer) -> None:
    target = RedisTarget(f"unix://{redis_server.unix_socket}?db=3")
    async with RedisBridge(target) as bridge:
        assert await bridge.execute("SET", "target", "unix") == b"OK"
    client = redis.Redis.from_url(redis_server.url.replace("/0", "/3"))
    try:
        assert client.get("target") == b"unix"
        client.delete("target")
    finally:
        client.close()


class Sentinel:
    """A real ``redis-server --sentinel`` monitoring one master on free loopback ports."""

    def __init__(self, directory: Path, master: RedisServer, name: str = "mymaster") -> None:
        self.port = free_port()
        self.name = name
        self.config = directory / "sentinel.conf"
        self.config.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {directory}\n"
            f"sentinel monitor {name} 127.0.0.1 {master.port} 1\n"
            f"sentinel down-after-milliseconds {name} 60000\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = require_binary("redis-server")
        self.process = subprocess.Popen(
            [binary, str(self.config), "--sentinel", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + 10
        try:
            while True:  # polled: the sentinel knows the master once it has read its config
                try:
                    if client.sentinel_get_master_addr_by_name(self.name):
                        return
                except redis.ConnectionError:
                    pass
                except redis.ResponseError as exc:  # not a sentinel: this binary cannot do it
                    pytest.skip(f"redis-server cannot run as a sentinel: {exc}")
                if self.process.poll() is not None:
                    pytest.skip("redis-server --sentinel exited: sentinel mode is unavailable")
                if time.monotonic() > deadline:
                    raise TimeoutError("the sentinel did not come up within 10 s")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        stop_process(self.process)


@pytest.fixture
def sentinel(private_redis: RedisServer, tmp_path: Path) -> Iterator[Sentinel]:
    directory = tmp_path / "sentinel"
    directory.mkdir()
    server = Sentinel(directory, private_redis)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.integration
async def test_bridge_reaches_the_master_through_sentinel(
    sentinel: Sentinel, private_redis: RedisServer
) -> None:
    # The URL's host is a decoy: only the sentinel knows where the master is.
    target = RedisTarget(
        "redis://unreachable.invalid:1/2",
        sentinels=(("127.0.0.1", sentinel.port),),
        sentinel_master="mymaster",
    )
    async with RedisBridge(target) as bridge:
        assert await bridge.execute("SET", "via", "sentinel") == b"OK"
        assert await bridge.execute("INCR", "n") == 1
        reply = await bridge.execute("HSET", "h", "a", "1")
        assert reply == 1  # RESP2 integers: protocol=2 holds behind Sentinel too
    master = redis.Redis(host="127.0.0.1", port=private_redis.port, db=2)
    try:
        assert master.get("via") == b"sentinel"
        assert master.get("n") == b"1"
    finally:
        master.close()


@pytest.mark.integration
async def test_fetch_waits_through_sentinel(sentinel: Sentinel, private_redis: RedisServer) -> None:
    target = RedisTarget("redis:///0", (("127.0.0.1", sentinel.port),), "mymaster")
    master = redis.Redis(host="127.0.0.1", port=private_redis.port)
    try:
        master.lpush("queue:default", '{"jid":"abc"}')
        async with RedisBridge(target) as bridge:
            fetch = ReliableFetch(
                bridge, target, identity="host:1:abc123", queues=QueueOrder([("default", 0)])
            )
            try:
                work = await fetch.wait_for_work(1.0)  # the blocking waiter's own connection
            finally:
                await fetch.close()
        assert work is not None
        assert work.raw == '{"jid":"abc"}'
        assert master.lrange("patient_sidekiq:inprogress:host:1:abc123:default", 0, -1) == [
            b'{"jid":"abc"}'
        ]
    finally:
        master.close()


@pytest.mark.integration
def test_client_closes_its_sentinel_connections(
    sentinel: Sentinel, private_redis: RedisServer
) -> None:
    target = RedisTarget("redis:///0", (("127.0.0.1", sentinel.port),), "mymaster")
    client = target.client(protocol=2)
    assert client.ping() is True
    client.close()  # closes the pool and, through it, the sentinel connections
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    for sentinel_client in pool.sentinel_manager.sentinels:
        assert all(c._sock is None for c in sentinel_client.connection_pool._available_connections)


@pytest.mark.integration
async def test_bridge_reconnects_through_sentinel(
    sentinel: Sentinel, private_redis: RedisServer
) -> None:
    target = RedisTarget("redis:///0", (("127.0.0.1", sentinel.port),), "mymaster")
    master = redis.Redis(host="127.0.0.1", port=private_redis.port)
    try:
        async with RedisBridge(target) as bridge:
            assert await bridge.execute("PING") == b"PONG"  # connected (lazily) by now
            master.client_kill_filter(_type="normal", skipme=True)  # drop the bridge's socket
            with pytest.raises(RedisUnavailableError):
                await bridge.execute("INCR", "n")  # outcome unknown: never resent
            # The next batch opens a fresh socket, asking the sentinel for the master again.
            assert await bridge.execute("SET", "after", "reconnect") == b"OK"
        assert master.get("after") == b"reconnect"
    finally:
        master.close()
