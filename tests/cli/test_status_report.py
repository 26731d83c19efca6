"""status_report: the ``status`` and ``inflight`` reports against a real redis-server.

State is written by the real writers (Heartbeat, InflightMonitor, Stats, SidekiqClient, a
running RequestWorker); the in-flight/capacity figures are also checked against the gem's
own Web tab formula, re-implemented below from its Ruby source.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
import trio

from patient_sidekiq import keys
from patient_sidekiq.cli.inflight_collect import collect_inflight, redacted_url
from patient_sidekiq.cli.status_collect import collect_status
from patient_sidekiq.cli.status_render import render_inflight, render_status
from patient_sidekiq.cli.status_report import (
    InflightEntry,
    StatusReport,
    inflight_to_json,
    ruby_round,
    utilization,
)
from patient_sidekiq.http.settings import HttpSettings
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.sidekiq.client import SidekiqClient
from patient_sidekiq.sidekiq.heartbeat import Heartbeat, ProcessInfo, WorkEntry
from patient_sidekiq.sidekiq.job import Job, TimestampDialect
from patient_sidekiq.wire.encryption import MessageEncryptor
from patient_sidekiq.wire.packing import PayloadSettings, pack
from patient_sidekiq.wire.payload_store import RedisPayloadStore
from patient_sidekiq.worker.inflight import InflightMonitor, gem_process_id
from patient_sidekiq.worker.request_call import CallbackRouting, RequestWorkerSettings
from patient_sidekiq.worker.stats import Stats
from tests.support.http import Server
from tests.worker.test_request_worker import (
    CALLBACKS,
    QUEUE,
    numbered_job,
    request_data,
    request_job,
    running_worker,
)

NOW = 1_700_000_100.0
T0 = 1_700_000_000.25

A1 = gem_process_id("hostA", 111)
A2 = gem_process_id("hostA", 111)  # a second processor in the same OS process
RUBY = gem_process_id("rubyhost", 333)  # an HTTP processor whose Sidekiq hash we lack
STALE = gem_process_id("hostD", 444)  # in the set, max_connections key expired
GONE = gem_process_id("hostE", 555)  # not in the set at all


def clock(now: float = NOW) -> Any:
    return lambda: now


def monitor(bridge: RedisBridge, process_id: str, max_connections: int) -> InflightMonitor:
    return InflightMonitor(
        bridge,
        SidekiqClient(bridge, clock=clock()),
        process_id=process_id,
        max_connections=max_connections,
        clock=clock(),
    )


async def beat(
    bridge: RedisBridge,
    host: str,
    pid: int,
    *,
    running: int = 0,
    quiet: bool = False,
    concurrency: int = 10,
    nonce: int | None = None,
    labels: tuple[str, ...] = (),
    version: str | None = None,
    queues: tuple[str, ...] = (QUEUE,),
    at: float = NOW,
) -> str:
    identity = f"{host}:{pid}:{pid if nonce is None else nonce:012x}"
    optional: dict[str, Any] = {"version": version} if version is not None else {}
    info = ProcessInfo(
        identity=identity,
        concurrency=concurrency,
        queues=[(q, 0) for q in queues],
        hostname=host,
        pid=pid,
        started_at=T0,
        tag="app",
        labels=labels,
        **optional,
    )
    work = {f"w{n}": WorkEntry(QUEUE, f'{{"n":{n}}}', int(T0)) for n in range(running)}
    await Heartbeat(bridge, info, running=lambda: work, quiet=lambda: quiet, clock=clock(at)).beat()
    return identity


def gem_inflight_counts_by_process(client: redis.Redis) -> dict[str, dict[str, int]]:
    """``TaskMonitor.inflight_counts_by_process`` (patient_http-sidekiq, task_monitor.rb).

    SMEMBERS processes, MGET their max_connections keys, ZRANGE the whole index; index
    members grouped by the part before the first '/'; every process id with a
    max_connections value adds its members to ``inflight`` and ``value.to_i`` to
    ``max_capacity`` of its ``hostname:pid`` group. (The Ruby method then SREMs the ids
    without a value; left out so the test does not change what it compares.)
    """
    process_ids = [m.decode() for m in client.smembers(keys.GEM_PROCESSES)]
    if not process_ids:
        return {}
    values = client.mget([keys.gem_process_max_connections(p) for p in process_ids])
    by_process: dict[str, int] = {}
    for task in client.zrange(keys.INFLIGHT_INDEX, 0, -1):
        owner = task.decode().split("/", 1)[0]
        by_process[owner] = by_process.get(owner, 0) + 1
    result: dict[str, dict[str, int]] = {}
    for process_id, value in zip(process_ids, values, strict=True):
        if value is None:
            continue
        host_pid = ":".join(process_id.split(":", 2)[:2])
        counts = result.setdefault(host_pid, {"inflight": 0, "max_capacity": 0})
        counts["inflight"] += by_process.get(process_id, 0)
        counts["max_capacity"] += int(value)
    return result


def web_tab_figures(client: redis.Redis) -> tuple[int, int, float]:
    """The ``/patient-http`` route of ``WebUI.registered`` (web_ui.rb): max_capacity,
    current_inflight and utilization = (inflight / max * 100).round(1), 0 without capacity."""
    processes = gem_inflight_counts_by_process(client)
    max_capacity = sum(p["max_capacity"] for p in processes.values())
    current = sum(p["inflight"] for p in processes.values())
    used = ruby_round(current / max_capacity * 100, 1) if max_capacity > 0 else 0.0
    return max_capacity, current, used


def job_text(n: int, **extra: Any) -> str:
    return numbered_job("http://127.0.0.1:9/x", n).with_fields(**extra).raw


async def build_cluster(bridge: RedisBridge, client: redis.Redis) -> dict[str, str]:
    """Two Sidekiq processes, four HTTP processors, stats, queues, retry/dead/scheduled."""
    python = await beat(bridge, "hostA", 111, running=2, concurrency=20)
    ruby = await beat(bridge, "hostB", 222, quiet=True)
    for process_id, capacity, tasks in ((A1, 8, 3), (A2, 4, 1), (RUBY, 16, 2), (STALE, 32, 2)):
        gem = monitor(bridge, process_id, capacity)
        await gem.heartbeat([])
        for n in range(tasks):
            await gem.register(f"req-{n}", job_text(n))
    client.delete(keys.gem_process_max_connections(STALE))

    stats = Stats(bridge)
    await stats.apply(
        [
            *Stats.record_request_commands(0.5, 200),
            *Stats.record_request_commands(0.5, 200),
            *Stats.record_request_commands(0.25, 404),
            *Stats.record_error_commands("http_error"),
            *Stats.record_error_commands("exception"),
        ]
    )
    await stats.record_capacity_refusal()

    job = Job.new("Plain", [1], queue="seconds")
    await SidekiqClient(bridge, clock=clock(T0)).push(job)
    await SidekiqClient(bridge, clock=clock(T0 + 30)).push(job.with_fields(jid="1" * 24))
    millis = SidekiqClient(bridge, dialect=TimestampDialect.MILLIS, clock=clock(NOW - 2.5))
    await millis.push(Job.new("Plain", [2], queue="millis"))
    client.sadd(keys.QUEUES, "empty")
    client.zadd(keys.RETRY, {job.with_fields(jid="2" * 24).raw: NOW + 10})
    client.zadd(keys.RETRY, {job.with_fields(jid="3" * 24).raw: NOW + 20})
    client.zadd(keys.DEAD, {job.with_fields(jid="4" * 24).raw: NOW - 10})
    await SidekiqClient(bridge, clock=clock()).schedule(job.with_fields(jid="5" * 24), NOW + 60)
    return {"python": python, "ruby": ruby}


@pytest.mark.integration
async def test_status_figures_match_the_writers_and_the_gems_web_tab(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    ids = await build_cluster(bridge, redis_client)
    report = await collect_status(bridge, now=NOW)

    by_name = {p.name: p for p in report.processes}
    assert list(by_name) == ["hostA:111", "hostB:222", "rubyhost:333"]
    python, ruby, http_only = by_name.values()
    assert python.identity == ids["python"]
    assert (python.role, python.alive, python.patient_sidekiq) == ("requests", True, True)
    assert (ruby.role, http_only.role, http_only.alive) == ("callbacks", "requests", True)
    assert (python.busy, python.concurrency, python.quiet, python.tag) == (2, 20, False, "app")
    assert python.started_at == T0
    assert python.beat == NOW
    assert python.queues == (QUEUE,)
    assert python.http is not None
    assert (python.http.inflight, python.http.capacity, python.http.utilization) == (4, 12, 33.3)
    assert ruby.quiet is True
    assert ruby.http is None
    assert http_only.identity is None
    assert http_only.http is not None
    assert (http_only.http.inflight, http_only.http.capacity) == (2, 16)

    # The gem's own formula on the same keys gives the same figures.
    gem = gem_inflight_counts_by_process(redis_client)
    ours = {p.http.key: p.http for p in report.processes if p.http is not None}
    assert {k: {"inflight": v.inflight, "max_capacity": v.capacity} for k, v in ours.items()} == gem
    assert web_tab_figures(redis_client) == (28, 6, 21.4)
    assert (report.capacity_total, report.inflight_total, report.utilization) == (28, 6, 21.4)
    assert report.inflight_registered == 8  # the stale process's two still count here
    assert redis_client.sismember(keys.GEM_PROCESSES, STALE)  # reading never prunes

    totals = report.totals
    assert (totals.requests, totals.errors, totals.max_capacity_exceeded) == (3, 2, 1)
    assert totals.duration == 1.25
    assert totals.average_duration == 0.417
    assert totals.errors_by_type == {"exception": 1, "http_error": 1}
    assert totals.http_statuses == {"200": 2, "404": 1}

    queues = {q.name: q for q in report.queues}
    assert list(queues) == ["empty", "millis", "seconds"]
    assert (queues["seconds"].size, queues["seconds"].latency) == (2, NOW - T0)
    assert queues["millis"].size == 1
    assert queues["millis"].latency == pytest.approx(2.5, abs=0.002)  # ms truncation
    assert (queues["empty"].size, queues["empty"].latency) == (0, 0.0)
    assert (report.retry_size, report.dead_size, report.scheduled_size) == (2, 1, 1)


@pytest.mark.integration
async def test_status_json_is_stable_and_the_text_shows_the_figures(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    await build_cluster(bridge, redis_client)
    report = await collect_status(bridge, now=NOW)
    data = json.loads(json.dumps(report.to_json()))
    assert list(data) == [
        "generated_at",
        "processes",
        "inflight_total",
        "capacity_total",
        "utilization",
        "inflight_registered",
        "totals",
        "queues",
        "retry_size",
        "dead_size",
        "scheduled_size",
        "live_workers",
    ]
    assert data["generated_at"] == NOW
    assert data["live_workers"] == 2
    assert (data["inflight_total"], data["capacity_total"], data["utilization"]) == (6, 28, 21.4)
    first = data["processes"][0]
    assert set(first) == {
        "identity", "hostname", "pid", "tag", "version", "started_at", "concurrency", "busy",
        "quiet", "beat", "rss_kb", "queues", "malformed", "http", "labels", "role", "alive",
        "patient_sidekiq",
    }  # fmt: skip
    assert (first["role"], first["alive"], first["labels"]) == ("requests", True, [])
    assert first["http"] == {"key": "hostA:111", "inflight": 4, "capacity": 12, "utilization": 33.3}
    assert data["processes"][2]["identity"] is None
    assert data["totals"] == {
        "requests": 3,
        "duration": 1.25,
        "average_duration": 0.417,
        "errors": 2,
        "errors_by_type": {"exception": 1, "http_error": 1},
        "http_statuses": {"200": 2, "404": 1},
        "max_capacity_exceeded": 1,
    }
    assert data["queues"][2] == {"name": "seconds", "size": 2, "latency": NOW - T0}
    assert (data["retry_size"], data["dead_size"], data["scheduled_size"]) == (2, 1, 1)

    text = render_status(report, 80)
    assert all(len(line) <= 80 for line in text.splitlines()), text
    for figure in (
        "hostA:111:00000000006f   requests",
        "4/12 (33.3%)",
        "hostB:222:0000000000de   callbacks",
        "rubyhost:333",
        "2/16 (12.5%)",
        "in flight 6 of 28 (21.4%), 8 registered",
        "requests 3  errors 2  avg 0.417 s  refused at capacity 1",
        "exception 1, http_error 1",
        "200 2, 404 1",
        "1m39s",  # the seconds queue: 99.75 s
        "Retry 2  Scheduled 1  Dead 1",
    ):
        assert figure in text, (figure, text)


@pytest.mark.integration
async def test_an_empty_redis_gives_an_empty_report(bridge: RedisBridge) -> None:
    report = await collect_status(bridge, now=NOW)
    assert report == StatusReport(
        processes=(),
        totals=report.totals,
        queues=(),
        retry_size=0,
        dead_size=0,
        scheduled_size=0,
        inflight_total=0,
        capacity_total=0,
        inflight_registered=0,
        generated_at=NOW,
    )
    assert report.totals.to_json()["requests"] == 0
    assert report.totals.average_duration == 0.0
    assert "(none)" in render_status(report)
    assert "No patient-sidekiq worker is alive." in render_status(report)
    assert await collect_inflight(bridge, now=NOW) == []
    assert render_inflight([]) == "0 in flight (oldest first)\n"


@pytest.mark.integration
async def test_garbage_shows_as_unknown_instead_of_failing(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    await beat(bridge, "hostA", 111)
    await beat(bridge, "very-long-hostname-" * 5, 9)
    redis_client.sadd(keys.PROCESSES, "broken:1:000000000000", "expired:2:000000000000")
    redis_client.hset("broken:1:000000000000", mapping={"info": "{not json", "busy": "many"})
    redis_client.sadd(keys.QUEUES, "wrongtype", "badjob", "nostamp", "stringstamp")
    redis_client.set(keys.queue("wrongtype"), "a string, not a list")
    redis_client.lpush(keys.queue("badjob"), "{not json")
    redis_client.lpush(keys.queue("nostamp"), '{"class":"X","args":[]}')
    redis_client.lpush(keys.queue("stringstamp"), '{"class":"X","args":[],"enqueued_at":"now"}')
    redis_client.set(keys.RETRY, "not a zset")
    redis_client.hset(keys.TOTALS, mapping={"requests": "abc", "duration": "x", "errors": "2"})
    redis_client.sadd(keys.GEM_PROCESSES, A1)
    redis_client.set(keys.gem_process_max_connections(A1), "lots")  # Ruby's to_i: 0
    redis_client.zadd(keys.INFLIGHT_INDEX, {f"{A1}/r1": 1, "no-slash": 2})

    report = await collect_status(bridge, now=NOW)
    names = [p.name for p in report.processes]
    # The expired hash is skipped.
    assert names == ["broken:1:000000000000", "hostA:111", f"{'very-long-hostname-' * 5}:9"]
    broken = report.processes[0]
    assert broken.malformed
    assert (broken.busy, broken.hostname, broken.concurrency) == (None, None, None)
    assert report.processes[1].http is not None
    assert (report.processes[1].http.inflight, report.processes[1].http.capacity) == (1, 0)
    queues = {q.name: (q.size, q.latency) for q in report.queues}
    assert queues == {
        "badjob": (1, None),
        "nostamp": (1, 0.0),
        "stringstamp": (1, None),
        "wrongtype": (None, 0.0),
    }
    assert report.retry_size is None
    assert (report.totals.requests, report.totals.duration, report.totals.errors) == (None, None, 2)
    assert report.totals.average_duration is None
    assert report.inflight_registered == 2
    text = render_status(report, 80)
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "broken:1:000000000000" in text
    assert "Retry ?" in text
    assert "requests ?" in text
    json.dumps(report.to_json())

    redis_client.set(keys.TOTALS, "string")
    redis_client.set(keys.PROCESSES, "string")
    report = await collect_status(bridge, now=NOW)
    assert [p.identity for p in report.processes] == [None]  # only the HTTP processor is left
    assert report.totals.requests is None
    render_status(report)


@pytest.mark.integration
async def test_inflight_lists_oldest_first_with_owner_liveness_and_request_kind(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    encryptor = MessageEncryptor("status-secret")
    store = PayloadSettings(
        stores={"redis": RedisPayloadStore(bridge)}, default_store="redis", store_threshold=10
    )
    url = "https://api.example.com/items?id=7"
    plain = request_job(url, method="post", jid="a" * 24, request_id="r-plain")
    encrypted = request_job(
        url, jid="b" * 24, data=await pack(request_data(url), PayloadSettings(encryptor=encryptor))
    )
    stored = request_job(url, jid="c" * 24, data=await pack(request_data(url), store))
    stamped = {
        "plain": plain.with_fields(enqueued_at=NOW - 50.0),
        "encrypted": encrypted.with_fields(enqueued_at=int((NOW - 70) * 1000)),  # 8.x millis
        "stored": stored.with_fields(enqueued_at=NOW - 10.0),
    }
    live = monitor(bridge, A1, 8)
    await live.heartbeat([])
    for request_id, job in stamped.items():
        await live.register(request_id, job.raw)
    stale = monitor(bridge, STALE, 8)
    await stale.heartbeat([])
    await stale.register("stale-one", stamped["plain"].with_fields(enqueued_at=NOW - 30.0).raw)
    redis_client.delete(keys.gem_process_max_connections(STALE))
    redis_client.hset(keys.INFLIGHT_JOBS, f"{GONE}/garbage", "{not json")
    redis_client.zadd(keys.INFLIGHT_INDEX, {f"{GONE}/garbage": (NOW - 400) * 1000})
    redis_client.zadd(keys.INFLIGHT_INDEX, {f"{GONE}/missing": (NOW - 5) * 1000})

    entries = await collect_inflight(bridge, now=NOW + 1)
    order = [e.request_id for e in entries]
    # By job time; without one (garbage, missing) by the last heartbeat, which is never
    # earlier than the enqueue, so the two scales compare.
    assert order == ["garbage", "encrypted", "plain", "stale-one", "stored", "missing"]
    by_id = {e.request_id: e for e in entries}
    first = by_id["plain"]
    assert first == InflightEntry(
        task_id=f"{A1}/plain",
        request_id="plain",
        process_id=A1,
        process_alive=True,
        heartbeat_at=NOW,
        heartbeat_age=1.0,
        enqueued_at=NOW - 50.0,
        age=51.0,
        queue=QUEUE,
        jid="a" * 24,
        callback_name="OracleCallback",
        request="plain",
        http_method="post",
        url="https://api.example.com/items?id=…",  # query values may be secrets
        process_identity=None,  # no Sidekiq process of hostA:111 beats here
    )
    assert by_id["encrypted"].age == pytest.approx(71.0)
    assert (by_id["encrypted"].request, by_id["encrypted"].url) == ("encrypted", None)
    assert (by_id["stored"].request, by_id["stored"].http_method) == ("stored", None)
    assert by_id["stale-one"].process_alive is False  # in the set, key expired
    assert by_id["garbage"].process_alive is False  # not in the set
    assert (by_id["garbage"].request, by_id["garbage"].queue, by_id["garbage"].age) == (
        "?",
        None,
        None,
    )
    assert by_id["garbage"].heartbeat_age == pytest.approx(401.0)
    assert by_id["missing"].request == "missing"

    assert [e.request_id for e in await collect_inflight(bridge, now=NOW, limit=2)] == [
        "garbage",
        "encrypted",
    ]
    data = inflight_to_json(entries)
    assert json.loads(json.dumps(data)) == data
    assert data[2]["url"] == "https://api.example.com/items?id=…"
    assert data[2]["process_alive"] is True
    assert (data[2]["process_name"], data[2]["process_identity"]) == ("hostA:111", None)
    text = render_inflight(entries, 80)
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "POST https://api.example.com/items?id=…" in text
    assert "id=7" not in text
    assert "encrypted" in text
    assert "stored" in text
    assert "hostA:111   alive" in text
    assert "hostD:444   GONE" in text
    assert "1m11s" in text  # the encrypted one's age
    assert "callback OracleCallback" in text
    assert "status-secret" not in text


@pytest.mark.integration
async def test_a_running_request_worker_is_reported_with_its_requests_in_flight(
    redis_url: str, redis_client: redis.Redis, http_server: Server
) -> None:
    settings = RequestWorkerSettings(
        http=HttpSettings(max_connections=6),
        routing=CallbackRouting(callback_queue=CALLBACKS),
    )
    jobs = [numbered_job(http_server.url("/slow?seconds=10"), n) for n in range(3)]
    async with (
        RedisBridge(redis_url) as bridge,
        running_worker(redis_url, settings=settings, concurrency=6, shutdown_timeout=0.2) as (
            launcher,
            worker,
        ),
    ):
        pushed = [await SidekiqClient(bridge).push(job) for job in jobs]
        with trio.fail_after(10):
            while redis_client.zcard(keys.INFLIGHT_INDEX) < 3:
                await trio.sleep(0.01)
        report = await collect_status(bridge)
        [me] = [p for p in report.processes if p.identity == launcher.identity]
        assert me.http is not None
        assert (me.http.inflight, me.http.capacity, me.http.utilization) == (3, 6, 50.0)
        assert me.concurrency == 6
        assert (report.inflight_total, report.capacity_total) == (3, 6)
        assert web_tab_figures(redis_client) == (6, 3, 50.0)

        entries = await collect_inflight(bridge)
        assert {e.process_id for e in entries} == {worker.process_id}
        assert all(e.process_alive for e in entries)
        assert sorted(e.request_id for e in entries) == [
            f"00000000-0000-4000-8000-{n:012x}" for n in range(3)
        ]
        assert {e.url for e in entries} == {http_server.url("/slow?seconds=…")}
        assert {e.process_identity for e in entries} == {launcher.identity}
        assert {e.jid for e in entries} == {str(job.jid) for job in jobs}
        assert all(e.age is not None and 0 <= e.age < 10 for e in entries)
        assert {e.enqueued_at for e in entries} == {job.enqueued_at for job in pushed}
        assert [e.enqueued_at for e in entries] == sorted(e.enqueued_at or 0 for e in entries)


@pytest.mark.integration
async def test_the_two_identities_of_a_run_show_their_roles_and_http_goes_to_requests(
    bridge: RedisBridge, redis_client: redis.Redis
) -> None:
    # One `patient-sidekiq run`: the callbacks identity sorts first, yet is not the HTTP one.
    callbacks = await beat(
        bridge, "py", 7, nonce=1, labels=("callbacks",), concurrency=8, queues=("py_cb",)
    )
    requests = await beat(bridge, "py", 7, nonce=2, labels=("requests",), concurrency=8)
    # A worker older than the labels: the identity with the HTTP capacity is the requests one.
    old_callbacks = await beat(bridge, "old", 8, nonce=1, concurrency=4, queues=("py_cb",))
    old_requests = await beat(bridge, "old", 8, nonce=2, concurrency=6)
    ruby_http = await beat(bridge, "rb", 9, version="7.3.10", queues=("default", QUEUE))
    ruby = await beat(bridge, "rb2", 10, version="7.3.10", queues=("default",))
    stale = await beat(bridge, "dead", 11, labels=("requests",), at=NOW - 31)
    for host, pid, capacity in (("py", 7, 8), ("old", 8, 6), ("rb", 9, 16)):
        gem = monitor(bridge, gem_process_id(host, pid), capacity)
        await gem.heartbeat([])
        await gem.register(f"req-{host}", job_text(pid))

    report = await collect_status(bridge, now=NOW)
    by_identity = {p.identity: p for p in report.processes}
    assert len(by_identity) == len(report.processes) == 7  # no HTTP-only row left over
    roles = {
        identity: (p.role, p.http.key if p.http else None) for identity, p in by_identity.items()
    }
    assert roles == {
        callbacks: ("callbacks", None),
        requests: ("requests", "py:7"),
        old_callbacks: ("callbacks", None),
        old_requests: ("requests", "old:8"),
        ruby_http: ("ruby requests", "rb:9"),
        ruby: ("ruby", None),
        stale: ("requests", None),
    }
    assert by_identity[stale].alive is False
    assert by_identity[ruby].alive is True
    assert not by_identity[ruby].patient_sidekiq
    assert {p.identity for p in report.live_workers()} == {
        callbacks,
        requests,
        old_callbacks,
        old_requests,
    }
    assert [p.identity for p in report.live_workers("py")] == [callbacks, requests]
    assert report.live_workers("rb") == []  # Ruby's Sidekiq is no patient-sidekiq worker

    text = render_status(report, 100)
    rows = {line.split()[0]: line for line in text.splitlines() if line.count(":") >= 2}
    assert rows[callbacks].split()[1:5] == ["callbacks", "py_cb", "0/8", "-"]
    assert rows[requests].split()[1:6] == ["requests", QUEUE, "0/8", "1/8", "(12.5%)"]
    assert "ruby requests" in rows[ruby_http]
    assert "no beat for 31.0s" in rows[stale]

    # inflight names each request's owner as the Busy page and the log do.
    entries = {e.request_id: e for e in await collect_inflight(bridge, now=NOW)}
    assert {name: e.process_identity for name, e in entries.items()} == {
        "req-py": requests,
        "req-old": old_requests,
        "req-rb": ruby_http,
    }
    assert requests in render_inflight(list(entries.values()))


def test_urls_lose_their_password_and_query_values() -> None:
    assert redacted_url("https://u:pw@api.example.com:8443/a/b?token=abc&x=1&flag#frag") == (
        "https://u:***@api.example.com:8443/a/b?token=…&x=…&flag"
    )
    assert redacted_url("http://api.example.com/plain") == "http://api.example.com/plain"
    assert redacted_url("http://[::1/broken") == "?"


def test_ruby_rounding_and_utilization() -> None:
    assert ruby_round(0.125, 2) == 0.13  # Python's round() gives 0.12
    assert ruby_round(2.5, 0) == 3.0
    assert ruby_round(-2.5, 0) == -3.0
    assert ruby_round(1.25 / 3, 3) == 0.417
    assert utilization(1, 3) == 33.3
    assert utilization(1, 8) == 12.5
    assert utilization(3, 0) == 0.0
