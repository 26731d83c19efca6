"""RedisBridge against a real redis-server."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any

import pytest
import redis
import trio
import trio.testing

from patient_sidekiq.errors import RedisCommandError, RedisUnavailableError
from patient_sidekiq.redis_io.redis_bridge import BridgeStatistics, RedisBridge
from tests.support.http import TlsCerts
from tests.support.programs import free_port
from tests.support.redis import RedisServer, running_redis

pytestmark = pytest.mark.integration


async def _wait_ready(bridge: RedisBridge) -> None:
    """Poll PING through the bridge until the server answers (no fixed sleeps)."""
    with trio.fail_after(10):
        while True:
            try:
                assert await bridge.execute("PING") == b"PONG"
                return
            except RedisUnavailableError:
                await trio.sleep(0.01)


async def test_execute_returns_raw_replies(redis_url: str) -> None:
    async with RedisBridge(redis_url) as bridge:
        assert await bridge.execute("SET", "k", "v") == b"OK"
        assert await bridge.execute("GET", "k") == b"v"
        assert await bridge.execute("GET", "missing") is None
        assert await bridge.execute("INCRBY", "n", 5) == 5
        assert await bridge.execute("INCRBYFLOAT", "f", 1.5) == b"1.5"
        assert await bridge.execute("RPUSH", "l", b"\xff", "é") == 2
        assert await bridge.execute("LRANGE", "l", 0, -1) == [b"\xff", "é".encode()]
        assert await bridge.execute("HSET", "h", "a", "1") == 1
        assert await bridge.execute("HGETALL", "h") == [b"a", b"1"]  # RESP2: flat list


async def test_error_reply_fails_only_its_command(redis_url: str) -> None:
    async with RedisBridge(redis_url) as bridge:
        await bridge.execute("SET", "s", "x")
        with pytest.raises(RedisCommandError, match="WRONGTYPE"):
            await bridge.execute("LPUSH", "s", "y")
        replies = await bridge.pipeline(
            [("INCR", "a"), ("LPUSH", "s", "y"), ("INCR", "a"), ("NOSUCHCOMMAND",)]
        )
        assert replies[0] == 1
        assert isinstance(replies[1], RedisCommandError)
        assert "WRONGTYPE" in str(replies[1])
        assert replies[2] == 2
        assert isinstance(replies[3], RedisCommandError)
        assert str(replies[3]).startswith("ERR unknown command")  # Redis's text, code included
        assert await bridge.execute("GET", "s") == b"x"  # the connection is still fine


async def test_pipeline_and_transaction(redis_url: str, redis_client: redis.Redis) -> None:
    async with RedisBridge(redis_url) as bridge:
        assert await bridge.pipeline([]) == []
        assert await bridge.pipeline([("SET", "a", 1), ("INCR", "a"), ("GET", "a")]) == [
            b"OK",
            2,
            b"2",
        ]
        replies = await bridge.transaction(
            [("SET", "t", "1"), ("INCR", "t"), ("LPUSH", "t", "x"), ("GET", "t")]
        )
        assert replies[:2] == [b"OK", 2]
        assert isinstance(replies[2], RedisCommandError)  # runtime error inside EXEC's list
        assert replies[3] == b"2"
        with pytest.raises(RedisCommandError, match="EXECABORT"):
            await bridge.transaction([("SET", "u", "1"), ("SET", "u")])  # wrong arity
        assert redis_client.exists("u") == 0  # nothing of the aborted transaction ran
        assert await bridge.execute("PING") == b"PONG"  # no MULTI left open


async def test_bad_input_fails_only_its_caller(redis_url: str) -> None:
    async with RedisBridge(redis_url) as bridge:
        with pytest.raises(ValueError, match="MULTI"):
            await bridge.execute("multi")
        with pytest.raises(ValueError, match="BLPOP"):
            await bridge.pipeline([("PING",), (b"BLPOP", "q", 0)])
        with pytest.raises(TypeError):
            await bridge.execute("SET", "k", None)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await bridge.execute("SET", "k", True)
        with pytest.raises(UnicodeEncodeError):
            await bridge.execute("SET", "k", "\ud800")
        with pytest.raises(ValueError, match="empty"):
            await bridge.pipeline([()])
        assert await bridge.execute("PING") == b"PONG"


async def test_subclasses_of_the_argument_types_are_sent_as_their_values(redis_url: str) -> None:
    # hiredis packs only the exact types: a subclass is converted in the caller's task rather
    # than breaking the whole batch in the I/O task.
    class Count(enum.IntEnum):
        THREE = 3

    class Name(str):
        pass

    async with RedisBridge(redis_url) as bridge:
        replies = await bridge.pipeline(
            [("RPUSH", Name("l"), Count.THREE, Name("é"), 2.5), ("LRANGE", "l", 0, -1)]
        )
        assert replies == [3, [b"3", "é".encode(), b"2.5"]]
        assert await bridge.transaction([("INCRBY", "n", Count.THREE)]) == [3]


async def test_concurrent_commands_are_batched(redis_url: str, redis_client: redis.Redis) -> None:
    async with RedisBridge(redis_url) as bridge:
        async with trio.open_nursery() as nursery:
            for _ in range(200):
                nursery.start_soon(bridge.execute, "INCR", "n")
        stats = bridge.statistics()
    assert redis_client.get("n") == b"200"
    assert isinstance(stats, BridgeStatistics)
    assert stats.commands_sent == 200
    print(f"200 concurrent INCR: {stats.round_trips} round trips, largest {stats.largest_batch}")
    assert stats.round_trips < 200
    assert stats.largest_batch > 1


async def test_a_tasks_commands_stay_in_order(redis_url: str, redis_client: redis.Redis) -> None:
    async def noise(index: int) -> None:
        for value in range(20):
            await bridge.execute("RPUSH", f"other:{index}", value)

    async with RedisBridge(redis_url) as bridge:
        replies: list[Any] = []

        async def ordered() -> None:
            replies.extend(await bridge.pipeline([("RPUSH", "ordered", i) for i in range(1, 101)]))

        async with trio.open_nursery() as nursery:
            for index in range(10):
                nursery.start_soon(noise, index)
            nursery.start_soon(ordered)
            for index in range(10, 20):
                nursery.start_soon(noise, index)
    assert replies == list(range(1, 101))
    assert redis_client.lrange("ordered", 0, -1) == [str(i).encode() for i in range(1, 101)]
    for index in range(20):
        assert redis_client.lrange(f"other:{index}", 0, -1) == [str(v).encode() for v in range(20)]


async def test_nothing_listening_is_unavailable() -> None:
    async with RedisBridge(f"redis://127.0.0.1:{free_port()}/0") as bridge:
        with pytest.raises(RedisUnavailableError, match="refused"):
            await bridge.execute("PING")
        replies = bridge.pipeline([("PING",), ("PING",)])
        with pytest.raises(RedisUnavailableError):
            await replies


async def test_server_killed_and_restarted(private_redis: RedisServer) -> None:
    async with RedisBridge(private_redis.url) as bridge:
        await _wait_ready(bridge)
        assert await bridge.execute("SET", "k", "before") == b"OK"

        private_redis.kill()
        for _ in range(3):  # the broken socket, then refused reconnects
            with pytest.raises(RedisUnavailableError):
                await bridge.execute("GET", "k")
        with pytest.raises(RedisUnavailableError):
            await bridge.transaction([("SET", "k", "down")])

        private_redis.start()
        await _wait_ready(bridge)
        assert await bridge.execute("GET", "k") is None  # a fresh server without persistence
        assert await bridge.pipeline([("SET", "k", "after"), ("GET", "k")]) == [b"OK", b"after"]


async def test_the_last_answer_and_the_last_failure_are_timed(private_redis: RedisServer) -> None:
    async with RedisBridge(private_redis.url) as bridge:
        assert (bridge.answered_at, bridge.last_failure) == (None, None)
        before = trio.current_time()
        await bridge.execute("PING")
        answered = bridge.answered_at
        assert answered is not None
        assert before <= answered <= trio.current_time()
        with pytest.raises(RedisCommandError):
            await bridge.execute("NOSUCHCOMMAND")  # an error reply is still an answer
        assert bridge.answered_at is not None
        assert bridge.answered_at >= answered
        assert bridge.last_failure is None

        private_redis.kill()
        with pytest.raises(RedisUnavailableError):
            await bridge.execute("PING")
        failure = bridge.last_failure
        assert failure is not None
        assert failure[0] >= bridge.answered_at
        assert failure[1]  # redis-py's or the socket's words, e.g. "Connection closed by server."


async def test_unix_socket_url(private_redis: RedisServer) -> None:
    async with RedisBridge(f"unix://{private_redis.unix_socket}?db=0") as bridge:
        await _wait_ready(bridge)
        assert await bridge.execute("ECHO", "hi") == b"hi"


async def test_close_answers_pending_commands(redis_url: str) -> None:
    bridge = RedisBridge(redis_url)
    await bridge.__aenter__()
    results: list[Any] = []

    async def submit(index: int) -> None:
        results.append(await bridge.execute("INCR", "pending"))

    async with trio.open_nursery() as nursery:
        for index in range(50):
            nursery.start_soon(submit, index)
        await trio.testing.wait_all_tasks_blocked()
        await bridge.__aexit__(None, None, None)  # while the 50 are waiting
    assert sorted(results) == list(range(1, 51))
    with pytest.raises(RedisUnavailableError, match="bridge is closed"):
        await bridge.execute("PING")
    await bridge.__aexit__(None, None, None)  # closing twice is harmless


async def test_cancelled_waiter_does_not_break_bridge(
    redis_url: str, redis_client: redis.Redis
) -> None:
    async with RedisBridge(redis_url) as bridge:
        with trio.move_on_after(0) as scope:
            await bridge.execute("SET", "sent", "anyway")
        assert scope.cancelled_caught
        with trio.CancelScope() as scope:
            scope.cancel()
            await bridge.pipeline([("INCR", "c"), ("INCR", "c")])
        assert await bridge.execute("INCR", "c") == 3  # the cancelled pipeline was still sent
        assert await bridge.execute("GET", "sent") == b"anyway"
    assert redis_client.get("c") == b"3"


async def test_a_shielded_wait_returns_the_reply_and_is_cancelled_after(redis_url: str) -> None:
    async with RedisBridge(redis_url) as bridge:
        replies: list[Any] = []
        with trio.CancelScope() as scope:
            scope.cancel()  # cancelled before the command is even sent
            replies.append(await bridge.execute("INCR", "n", shielded=True))
            await trio.lowlevel.checkpoint()  # the cancellation lands here
            replies.append("not reached")
        assert scope.cancelled_caught
        assert replies == [1]
        assert await bridge.execute("GET", "n") == b"1"


async def test_tls_with_replies_larger_than_a_tls_record(
    tmp_path: Path, tls_certs: TlsCerts
) -> None:
    # The non-blocking socket under TLS: a reply spans many records (SSLWantRead between
    # them), and a write many records too.
    with running_redis(tmp_path, tls=tls_certs) as server:
        async with RedisBridge(server.tls_url) as bridge:
            big = bytes(range(256)) * 2_000  # 512 KB
            assert await bridge.execute("SET", "big", big) == b"OK"
            assert await bridge.execute("GET", "big") == big
            counts: list[Any] = []
            async with trio.open_nursery() as nursery:
                for _ in range(100):
                    nursery.start_soon(lambda: _incr_into(bridge, counts))
            assert sorted(counts) == list(range(1, 101))


async def _incr_into(bridge: RedisBridge, counts: list[Any]) -> None:
    counts.append(await bridge.execute("INCR", "n"))


async def test_misuse() -> None:
    bridge = RedisBridge("redis://127.0.0.1:1/0")
    with pytest.raises(RuntimeError):
        await bridge.execute("PING")
    async with bridge:
        with pytest.raises(RuntimeError):
            await bridge.__aenter__()
