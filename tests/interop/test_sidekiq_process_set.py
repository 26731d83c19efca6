"""A real Ruby Sidekiq reads our heartbeat: Busy page data, running jobs, quiet!/stop!."""

from __future__ import annotations

import pytest
import trio

from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.sidekiq.heartbeat import Heartbeat, ProcessInfo, WorkEntry, make_identity
from patient_sidekiq.sidekiq.launcher import Launcher, WorkerSettings
from patient_sidekiq.sidekiq.processor import Dispatcher
from tests.interop.conftest import SIDEKIQ_CLIENT, run_ruby

pytestmark = [pytest.mark.interop, pytest.mark.integration]

JOB = (
    '{"class":"PatientHttp::Sidekiq::RequestWorker","queue":"patient_http","args":[1],'
    '"jid":"b0a04c29806cdb2637f2fa7e"}'
)

PROCESS_SET = (
    SIDEKIQ_CLIENT
    + r"""
set = Sidekiq::ProcessSet.new
processes = set.map do |p|
  {"identity" => p.identity, "concurrency" => p["concurrency"], "busy" => p["busy"],
   "queues" => p["queues"], "quiet" => p.stopping?, "hostname" => p["hostname"],
   "pid" => p["pid"], "tag" => p.tag, "version" => p["version"]}
end
work = Sidekiq::Workers.new.map do |process_id, thread_id, w|
  payload = w["payload"].is_a?(String) ? JSON.parse(w["payload"]) : w["payload"]
  [process_id, thread_id, w["queue"], payload["jid"], w["run_at"]]
end
set.each { |p| p.public_send(input["signal"]) } if input["signal"]
puts JSON.generate({"processes" => processes, "size" => set.size, "work" => work,
  "sidekiq" => Sidekiq::VERSION})
"""
)


async def test_ruby_sidekiq_lists_our_process_and_its_jobs(redis_url: str) -> None:
    identity = make_identity("pybox", 4242)
    info = ProcessInfo(identity, 256, [("patient_http", 0)], hostname="pybox", pid=4242)
    running = {"t1": WorkEntry("patient_http", JOB, 1795615729)}
    quiet = [False]
    async with RedisBridge(redis_url) as bridge:
        heartbeat = Heartbeat(bridge, info, running=lambda: running, quiet=lambda: quiet[0])
        await heartbeat.beat()
        seen = run_ruby(PROCESS_SET, {"url": redis_url, "signal": "quiet!"})
        assert seen["size"] == 1
        [process] = seen["processes"]
        assert process == {
            "identity": identity,
            "concurrency": 256,
            "busy": 1,
            "queues": ["patient_http"],
            "quiet": False,
            "hostname": "pybox",
            "pid": 4242,
            "tag": "",
            "version": process["version"],
        }
        assert seen["work"] == [
            [identity, "t1", "patient_http", "b0a04c29806cdb2637f2fa7e", 1795615729]
        ]
        # quiet! from the Ruby API reaches us on the next beat; stop! on the one after.
        assert await heartbeat.beat() == "TSTP"
        quiet[0] = True
        assert await heartbeat.beat() is None
        seen = run_ruby(PROCESS_SET, {"url": redis_url, "signal": "stop!"})
        assert seen["processes"][0]["quiet"] is True
        assert await heartbeat.beat() == "TERM"
        await heartbeat.clear()
        assert run_ruby(PROCESS_SET, {"url": redis_url})["size"] == 0


async def test_quiet_and_stop_from_the_ruby_api_reach_a_running_worker(redis_url: str) -> None:
    settings = WorkerSettings(
        redis_url=redis_url,
        queues=[("patient_http", 0)],
        concurrency=7,
        heartbeat_interval=0.05,
        handle_os_signals=False,
    )
    launcher = Launcher(settings, Dispatcher())
    async with trio.open_nursery() as nursery:
        await nursery.start(launcher.run)
        seen = run_ruby(PROCESS_SET, {"url": redis_url, "signal": "quiet!"})
        assert seen["processes"][0]["concurrency"] == 7
        with trio.fail_after(10):
            while not launcher.quieting:
                await trio.sleep(0.01)
        run_ruby(PROCESS_SET, {"url": redis_url, "signal": "stop!"})
    # The launcher returned on its own (the nursery exited) and left the process set.
    assert run_ruby(PROCESS_SET, {"url": redis_url})["size"] == 0
