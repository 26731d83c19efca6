import json

import pytest
import redis

from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.ruby import rubyjson
from patient_sidekiq.sidekiq.heartbeat import Heartbeat, ProcessInfo, WorkEntry, make_identity

pytestmark = pytest.mark.integration

NOW = 1795615729.5
JOB = '{"class":"PatientHttp::Sidekiq::RequestWorker","args":[],"jid":"b0a04c29806cdb2637f2fa7e"}'


def make_heartbeat(
    bridge: RedisBridge, running: dict[str, WorkEntry], quiet: list[bool]
) -> Heartbeat:
    info = ProcessInfo(
        identity=make_identity("box", 4242),
        concurrency=256,
        queues=[("patient_http", 0), ("default", 0)],
        hostname="box",
        pid=4242,
        started_at=NOW - 60,
    )
    return Heartbeat(
        bridge, info, running=lambda: running, quiet=lambda: quiet[0], clock=lambda: NOW
    )


def test_identity_has_sidekiqs_shape() -> None:
    host, pid, nonce = make_identity("box", 7).split(":")
    assert (host, pid, len(nonce)) == ("box", "7", 12)
    assert int(nonce, 16) >= 0


async def test_beat_writes_the_process_hash_work_and_stats(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    running = {"w1": WorkEntry("patient_http", JOB, int(NOW))}
    heartbeat = make_heartbeat(bridge, running, [False])
    heartbeat.count(processed=3, failed=1)
    assert await heartbeat.beat() is None
    identity = heartbeat.identity
    assert redis_client.smembers("processes") == {identity.encode()}
    fields = {k.decode(): v.decode() for k, v in redis_client.hgetall(identity).items()}
    assert fields["busy"] == "1"
    assert fields["quiet"] == "false"
    assert fields["concurrency"] == "256"
    assert fields["beat"] == "1795615729.5"
    assert int(fields["rss"]) > 0
    info = json.loads(fields["info"])
    assert info["concurrency"] == 256
    assert info["queues"] == ["patient_http", "default"]
    assert info["weights"] == [{"patient_http": 0, "default": 0}]
    assert info["capsules"]["default"]["mode"] == "strict"
    assert '"started_at":1795615669.5' in fields["info"]
    assert 0 < redis_client.ttl(identity) <= 60
    assert redis_client.hgetall(f"{identity}:workers") == redis_client.hgetall(f"{identity}:work")
    work = redis_client.hgetall(f"{identity}:work")
    assert rubyjson.loads(work[b"w1"]) == {
        "queue": "patient_http",
        "payload": JOB,
        "run_at": int(NOW),
    }
    assert redis_client.get("stat:processed") == b"3"
    assert redis_client.get("stat:failed") == b"1"
    assert redis_client.get("stat:processed:2026-11-25") == b"3"
    assert redis_client.ttl("stat:failed:2026-11-25") > 4 * 365 * 24 * 3600


async def test_remote_signals_are_popped_one_per_beat(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    quiet = [False]
    heartbeat = make_heartbeat(bridge, {}, quiet)
    redis_client.lpush(f"{heartbeat.identity}-signals", "TSTP")
    redis_client.lpush(f"{heartbeat.identity}-signals", "TERM")
    assert await heartbeat.beat() == "TSTP"
    quiet[0] = True
    assert await heartbeat.beat() == "TERM"
    assert redis_client.hget(heartbeat.identity, "quiet") == b"true"
    assert redis_client.exists(f"{heartbeat.identity}:work") == 0


async def test_clear_leaves_the_cluster(bridge: RedisBridge, redis_client: redis.Redis) -> None:
    heartbeat = make_heartbeat(bridge, {"w": WorkEntry("q", JOB, 1)}, [False])
    await heartbeat.beat()
    heartbeat.count(processed=1)
    await heartbeat.clear()
    assert redis_client.smembers("processes") == set()
    assert redis_client.exists(f"{heartbeat.identity}:work") == 0
    assert redis_client.get("stat:processed") == b"1"
