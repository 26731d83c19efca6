import pytest
import redis
import trio

from patient_sidekiq import keys
from patient_sidekiq.sidekiq.job import Job
from patient_sidekiq.sidekiq.launcher import Launcher, WorkerSettings
from patient_sidekiq.sidekiq.processor import Dispatcher, Work
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration


def settings(redis_url: str, **overrides: object) -> WorkerSettings:
    values: dict[str, object] = {
        "redis_url": redis_url,
        "queues": [("q", 0)],
        "concurrency": 5,
        "shutdown_timeout": 5.0,
        "heartbeat_interval": 0.05,
        "poll_interval_average": 0.05,
        "handle_os_signals": False,
        "identity": "pybox:9:dddddddddddd",
    }
    values.update(overrides)
    return WorkerSettings(**values)  # type: ignore[arg-type]


def job_text(class_name: str, jid: str) -> str:
    return Job.new(class_name, [], queue="q", jid=jid).raw


async def start(nursery: trio.Nursery, launcher: Launcher) -> None:
    await nursery.start(launcher.run)


async def test_runs_jobs_and_leaves_the_cluster_cleanly(
    redis_url: str, redis_client: redis.Redis
) -> None:
    done: list[str] = []

    async def handler(job: Job, work: Work) -> None:
        done.append(str(job.jid))

    launcher = Launcher(settings(redis_url), Dispatcher({"Ok": handler}))
    async with trio.open_nursery() as nursery:
        await start(nursery, launcher)
        assert redis_client.sismember("processes", launcher.identity)
        redis_client.lpush("queue:q", *[job_text("Ok", f"{i:024x}") for i in range(20)])
        await eventually(lambda: len(done) == 20)
        await eventually(lambda: redis_client.get("stat:processed") == b"20")
        launcher.stop()
    assert redis_client.smembers("processes") == set()
    assert redis_client.llen(keys.inprogress(launcher.identity, "q")) == 0


async def test_remote_quiet_then_stop(redis_url: str, redis_client: redis.Redis) -> None:
    launcher = Launcher(settings(redis_url), Dispatcher())
    async with trio.open_nursery() as nursery:
        await start(nursery, launcher)
        redis_client.lpush(f"{launcher.identity}-signals", "TSTP")
        await eventually(lambda: launcher.quieting)
        await eventually(lambda: redis_client.hget(launcher.identity, "quiet") == b"true")
        redis_client.lpush("queue:q", job_text("Ok", "e" * 24))
        redis_client.lpush(f"{launcher.identity}-signals", "TERM")
    # Quiet: the job pushed afterwards was never fetched.
    assert redis_client.lrange("queue:q", 0, -1) == [job_text("Ok", "e" * 24).encode()]


async def test_quiet_is_shown_at_once_not_a_heartbeat_later(
    redis_url: str, redis_client: redis.Redis
) -> None:
    launcher = Launcher(settings(redis_url, heartbeat_interval=3600), Dispatcher())
    async with trio.open_nursery() as nursery:
        await start(nursery, launcher)
        assert redis_client.hget(launcher.identity, "quiet") == b"false"
        launcher.quiet()
        # The next regular beat is an hour away: only the extra beat can write this.
        await eventually(lambda: redis_client.hget(launcher.identity, "quiet") == b"true")
        launcher.stop()


async def test_stop_timeout_requeues_unfinished_jobs_exactly_once(
    redis_url: str, redis_client: redis.Redis
) -> None:
    started = trio.Event()
    finished_quickly: list[str] = []

    async def forever(job: Job, work: Work) -> None:
        started.set()
        await trio.sleep_forever()

    async def quick(job: Job, work: Work) -> None:
        finished_quickly.append(str(job.jid))

    stuck = job_text("Forever", "f" * 24)
    launcher = Launcher(
        settings(redis_url, shutdown_timeout=0.2), Dispatcher({"Forever": forever, "Quick": quick})
    )
    async with trio.open_nursery() as nursery:
        await start(nursery, launcher)
        redis_client.lpush("queue:q", stuck)
        await started.wait()
        redis_client.lpush("queue:q", job_text("Quick", "1" * 24))
        await eventually(lambda: finished_quickly == ["1" * 24])
        launcher.stop()
    assert redis_client.lrange("queue:q", 0, -1) == [stuck.encode()]
    assert redis_client.zcard("retry") == 0
    assert redis_client.llen(keys.inprogress(launcher.identity, "q")) == 0
    assert redis_client.smembers("processes") == set()


async def test_startup_recovers_a_dead_process_and_the_poller_runs(
    redis_url: str, redis_client: redis.Redis
) -> None:
    done: list[str] = []

    async def handler(job: Job, work: Work) -> None:
        done.append(str(job.jid))

    dead = "deadbox:3:eeeeeeeeeeee"
    redis_client.lpush(keys.inprogress(dead, "q"), job_text("Ok", "d" * 24))
    redis_client.zadd("schedule", {job_text("Ok", "5" * 24): 1.0})
    launcher = Launcher(settings(redis_url), Dispatcher({"Ok": handler}))
    async with trio.open_nursery() as nursery:
        await start(nursery, launcher)
        await eventually(lambda: sorted(done) == ["5" * 24, "d" * 24])
        launcher.stop()


async def test_ttin_dumps_running_jobs(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    release = trio.Event()

    async def slow(job: Job, work: Work) -> None:
        await release.wait()

    launcher = Launcher(settings(redis_url), Dispatcher({"Slow": slow}))
    client = redis.Redis.from_url(redis_url)
    try:
        async with trio.open_nursery() as nursery:
            await start(nursery, launcher)
            client.lpush("queue:q", job_text("Slow", "7" * 24))
            await eventually(lambda: client.hget(launcher.identity, "busy") == b"1")
            client.lpush(f"{launcher.identity}-signals", "TTIN")
            await eventually(lambda: "TTIN: 1 running jobs" in caplog.text)
            assert "jid=777777777777777777777777" in caplog.text
            release.set()
            launcher.stop()
    finally:
        client.close()
