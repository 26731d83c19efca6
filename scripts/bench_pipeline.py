"""End-to-end benchmark of what users run: ``patient-sidekiq run`` beside the real gem.

Per scenario, a backlog of ``PatientHttp::Sidekiq::RequestWorker`` jobs is enqueued ONCE by
the real gem (``PatientHttp::Sidekiq.execute`` in Ruby, scripts/bench_enqueue.rb, when the
oracle is built: ``$ORACLE_ROOT``, else ``.oracle/``), else by our ``patient_sidekiq.Client``
writing the same jobs, into a template database, and copied (Redis ``COPY``) into a flushed
database before each run. Then, on a private redis-server and a private nginx (echo module;
0 ms, 50 ms and 2 s endpoints; HTTP/1.1, and TLS with HTTP/2 and HTTP/1.1 by ALPN):

* ours: the real CLI, ``.venv/bin/patient-sidekiq run --processes N ...``, as a subprocess;
* gem: the real gem's processor, ``$ORACLE_ROOT/bin/processor_server.sh`` (Sidekiq 7.3.10 +
  patient_http-sidekiq 1.0.1), the same queues and max_connections, working only the request
  queue (its CallbackWorker never runs), with a larger Sidekiq Redis pool (scripts/
  bench_gem_boot.rb says why).

Each side is measured the same way. Ready: the process (each of them, with ``--processes``)
is in Sidekiq's ``processes`` set. Done: the callback queue holds one CallbackWorker job per
request (LLEN); times come from the callback jobs' own ``enqueued_at``. jobs/s = jobs /
(last callback - ready). CPU = user+sys of the whole process tree (supervisor and children)
from ready to done (``/proc/<pid>/stat`` sampled at both ends; ``wait4`` whole-life totals for
reference), peak RSS per process (VmHWM) and their sum, context switches, Redis round trips
and commands per job (``INFO stats`` deltas over the same window, the harness's own
commands taken out). Paced runs push the same gem-written jobs one at a time at a steady rate
(``enqueued_at`` restamped at push, as Sidekiq's client stamps it) and report the added
latency: callback enqueued_at - request enqueued_at - endpoint delay.

Numbers are printed, never asserted; the exit status is non-zero only when a scenario could
not be measured (the reason is printed). Usage: scripts/bench_pipeline --help
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import redis

from patient_sidekiq import Client, keys

# Run as ``python scripts/bench_pipeline.py``: scripts/ is on sys.path (bench_support); the
# repository root is added for tests.support (as scripts/bench_fetch.py does).
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
from bench_support import (
    DELAYS_MS,
    BenchError,
    Callbacks,
    Child,
    CountingRedis,
    NginxServer,
    ProcSample,
    RedisServer,
    fmt,
    median,
    nginx_server,
    percentile,
    process_cpu,
    raise_nofile,
    read_callbacks,
    redis_server,
    sample_process,
    sample_tree,
    tail,
)
from tests.support.oracle import SOURCE as ORACLE_SOURCE
from tests.support.oracle import oracle_env, oracle_root

REQUEST_QUEUE = "bench_requests"
CALLBACK_QUEUE = "bench_callbacks"
CALLBACK_NAME = "BenchCallback"
SCRIPTS = Path(__file__).resolve().parent
READY_POLL = 0.01
DONE_POLL = 0.05
READY_TIMEOUT = 90.0
PACED_SETTLE = 1.0
SHUTDOWN_TIMEOUT = 25
ENQUEUED_AT = re.compile(rb'"enqueued_at":[0-9.eE+-]+')

Side = Literal["ours", "gem"]
Kind = Literal["backlog", "fanout", "paced"]


# --- scenarios ---


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: Kind
    path: str
    tls: bool
    ours_protocol: str  # --protocol of ours
    gem_protocol: str | None  # the gem's `protocol` (None: negotiated by ALPN)
    jobs: int
    max_connections: int
    processes: tuple[str, ...] = ("1",)  # ours --processes, one variant each
    gem: bool = True
    gem_note: str = ""
    spread: int = 1  # plain ports the jobs' URLs are spread over
    base: str | None = None  # paced: the backlog scenario whose throughput sets the rate

    @property
    def delay_ms(self) -> float:
        return DELAYS_MS[self.path]

    @property
    def transport(self) -> str:
        if not self.tls:
            return "HTTP/1.1"
        return "TLS HTTP/1.1" if self.ours_protocol == "http1" else "TLS, HTTP/2 by ALPN"


PROTOCOLS = {  # name: (tls, ours --protocol, the gem's protocol; None = negotiated by ALPN)
    "h1": (False, "http1", "http1"),
    "tls_h1": (True, "http1", "http1"),
    "tls_h2": (True, "auto", None),
}


def make_scenario(
    name: str, kind: Kind, path: str, jobs: int, max_connections: int, protocol: str = "h1",
    **extra: Any,
) -> Scenario:  # fmt: skip
    tls, ours, gem = PROTOCOLS[protocol]
    return Scenario(name, kind, path, tls, ours, gem, jobs, max_connections, **extra)


def catalogue(scale: float, paced_jobs: int) -> list[Scenario]:
    """Every scenario, job counts times ``scale``."""

    def n(jobs: int) -> int:
        return max(1, round(jobs * scale))

    fanout, fanout50k, paced = n(10_000), n(50_000), paced_jobs
    skip = (
        "gem side skipped as too slow: one Sidekiq process hands jobs to its processor at a "
        "few hundred per second (see fanout); --gem-fanout50k runs it anyway"
    )
    return [
        make_scenario("instant", "backlog", "/instant", n(20_000), 256),
        make_scenario("delay50", "backlog", "/delay50", n(20_000), 256),
        make_scenario("tls_h1", "backlog", "/instant", n(10_000), 256, "tls_h1"),
        make_scenario("tls_h2", "backlog", "/instant", n(10_000), 256, "tls_h2"),
        make_scenario("fanout", "fanout", "/delay2000", fanout, fanout),
        make_scenario(
            "fanout50k", "fanout", "/delay2000", fanout50k, fanout50k,
            processes=("auto",), gem=False, gem_note=skip, spread=4,
        ),
        make_scenario("processes", "backlog", "/instant", n(20_000), 256, processes=("1", "2")),
        make_scenario("paced_h1", "paced", "/instant", paced, 256, base="instant"),
        make_scenario("paced_tls_h1", "paced", "/instant", paced, 256, "tls_h1", base="tls_h1"),
        make_scenario("paced_tls_h2", "paced", "/instant", paced, 256, "tls_h2", base="tls_h2"),
    ]  # fmt: skip


GROUPS = {"paced": ("paced_h1", "paced_tls_h1", "paced_tls_h2")}


def choose(args: argparse.Namespace) -> list[Scenario]:
    scale = 0.1 if args.quick else 1.0
    paced_jobs = args.paced_jobs or max(100, round(3_000 * scale))
    every = catalogue(scale, paced_jobs)
    by_name = {scenario.name: scenario for scenario in every}
    if args.scenarios == "all":
        names = list(by_name)
    else:
        names = []
        for raw in args.scenarios.split(","):
            name = raw.strip()
            if not name:
                continue
            for each in GROUPS.get(name, (name,)):
                if each not in by_name:
                    raise SystemExit(
                        f"bench_pipeline: unknown scenario {each!r}; choose from "
                        f"{', '.join([*by_name, *GROUPS])} or all"
                    )
                if each not in names:
                    names.append(each)
    chosen = [by_name[name] for name in names]
    if args.gem_fanout50k:
        chosen = [replace(s, gem=True) if s.name == "fanout50k" else s for s in chosen]
    return chosen


# --- the environment of a benchmark ---


@dataclass
class Env:
    directory: Path
    redis: RedisServer
    nginx: NginxServer
    oracle: Path | None
    args: argparse.Namespace
    worker_bin: Path
    nofile: int
    runs: int = 0

    @property
    def run_db(self) -> int:
        return self.redis.db

    @property
    def template_db(self) -> int:
        return self.redis.db + 1


def clean_env() -> dict[str, str]:
    """This environment without what would reconfigure a side behind the harness's back."""
    env = dict(os.environ)
    for name in list(env):
        if name.startswith(("PATIENT_HTTP_", "ORACLE_", "BENCH_")) or name in (
            "REDIS_URL",
            "REDIS_PROVIDER",
            "RUBYOPT",
            "SSL_CERT_FILE",
        ):
            del env[name]
    return env


def gem_env(env: Env, scenario: Scenario) -> dict[str, str]:
    assert env.oracle is not None
    base = oracle_env(env.oracle, clean_env())
    config: dict[str, object] = {"max_connections": scenario.max_connections}
    if scenario.gem_protocol is not None:
        config["protocol"] = scenario.gem_protocol
    concurrency = env.args.gem_concurrency
    pool = env.args.gem_redis_pool
    if pool == "auto":
        pool = str(max(concurrency + 5, min(scenario.max_connections, 1000)))
    base.update(
        ORACLE_REDIS_URL=env.redis.url(env.run_db),
        REDIS_URL=env.redis.url(env.run_db),
        ORACLE_REQUEST_QUEUE=REQUEST_QUEUE,
        ORACLE_CALLBACK_QUEUE=CALLBACK_QUEUE,
        ORACLE_QUEUES=REQUEST_QUEUE,
        ORACLE_CONCURRENCY=str(concurrency),
        ORACLE_TIMEOUT=str(SHUTDOWN_TIMEOUT),
        ORACLE_CONFIG_JSON=json.dumps(config),
        BENCH_SIDEKIQ_LOG_LEVEL=env.args.log_level,
        SSL_CERT_FILE=str(env.nginx.cert_path),
    )
    if pool != "stock":  # else Sidekiq's own pools: 10 connections, 1 s checkout timeout
        base["BENCH_REDIS_POOL_SIZE"] = pool
        base["BENCH_REDIS_POOL_TIMEOUT"] = str(env.args.gem_pool_timeout)
    return base


def gem_settings(env: Env, scenario: Scenario) -> str:
    variables = gem_env(env, scenario)
    pool = "Sidekiq's stock Redis pools"
    if "BENCH_REDIS_POOL_SIZE" in variables:
        pool = (
            f"Redis pool {variables['BENCH_REDIS_POOL_SIZE']} (checkout timeout "
            f"{variables['BENCH_REDIS_POOL_TIMEOUT']} s)"
        )
    return (
        f"Sidekiq -c {variables['ORACLE_CONCURRENCY']}, {pool}, "
        f"config {variables['ORACLE_CONFIG_JSON']}"
    )


def ours_max_connections(scenario: Scenario, processes: str) -> int:
    if scenario.kind == "fanout" and processes != "1":
        # every request in flight at once, the fan-out split over the processes
        return math.ceil(scenario.jobs / expected_processes(processes))
    return scenario.max_connections


def ours_argv(env: Env, scenario: Scenario, processes: str) -> list[str]:
    return [
        str(env.worker_bin),
        "run",
        "--redis-url",
        env.redis.url(env.run_db),
        "--queue",
        REQUEST_QUEUE,
        "--callback-queue",
        CALLBACK_QUEUE,
        "--max-connections",
        str(ours_max_connections(scenario, processes)),
        "--protocol",
        scenario.ours_protocol,
        "--ca-bundle",
        str(env.nginx.cert_path),
        "--processes",
        processes,
        "--shutdown-timeout",
        str(SHUTDOWN_TIMEOUT),
        "--log-level",
        env.args.log_level,
    ]


def expected_processes(processes: str) -> int:
    if processes == "auto":
        return len(os.sched_getaffinity(0))
    return int(processes)


# --- backlogs ---


@dataclass
class Backlog:
    """The template: the scenario's jobs in the template database, as their writer wrote them."""

    jobs: int
    writer: str
    seconds: float
    raws: list[bytes] = field(default_factory=list)  # paced: the jobs, pushed one by one


def prepare_backlog(env: Env, scenario: Scenario) -> Backlog:
    """Write the scenario's jobs into the template database, once: by the real gem when the
    oracle is there, else by our Client (the same jobs)."""
    urls = env.nginx.urls(scenario.path, tls=scenario.tls, spread=scenario.spread)
    client = redis.Redis.from_url(env.redis.url(env.template_db))
    client.flushdb()
    started = time.perf_counter()
    if env.oracle is not None:
        writer = "the real gem (PatientHttp::Sidekiq.execute, scripts/bench_enqueue.rb)"
        enqueue_with_gem(env, urls, scenario.jobs)
    else:
        writer = "our Python Client (no oracle built)"
        enqueue_with_client(env, urls, scenario.jobs)
    seconds = time.perf_counter() - started
    queued = int(client.llen(keys.queue(REQUEST_QUEUE)))
    if queued != scenario.jobs:
        raise BenchError(f"the backlog has {queued} jobs, not {scenario.jobs}")
    backlog = Backlog(scenario.jobs, writer, seconds)
    if scenario.kind == "paced":
        raws: list[bytes] = client.lrange(keys.queue(REQUEST_QUEUE), 0, -1)  # type: ignore[assignment]
        backlog.raws = list(reversed(raws))  # LPUSHed: the oldest is last
    client.close()
    return backlog


def enqueue_with_gem(env: Env, urls: Sequence[str], total: int) -> None:
    assert env.oracle is not None
    variables = oracle_env(env.oracle, clean_env())
    variables.update(
        ORACLE_REDIS_URL=env.redis.url(env.template_db),
        ORACLE_REQUEST_QUEUE=REQUEST_QUEUE,
        ORACLE_CALLBACK_QUEUE=CALLBACK_QUEUE,
    )
    slices = max(1, min(len(os.sched_getaffinity(0)), total // 1000))
    per = math.ceil(total / slices)
    processes = []
    for first in range(0, total, per):
        count = min(per, total - first)
        argv = [
            "ruby",
            str(SCRIPTS / "bench_enqueue.rb"),
            ",".join(urls),
            str(count),
            str(first),
            CALLBACK_NAME,
        ]
        processes.append(
            subprocess.Popen(argv, env=variables, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        )
    try:
        for process in processes:
            _, err = process.communicate()
            if process.returncode != 0:
                raise BenchError(
                    f"scripts/bench_enqueue.rb failed ({process.returncode}): "
                    f"{err.decode(errors='replace').strip()[-500:]}"
                )
    finally:
        for process in processes:  # interrupted: none outlives the benchmark
            if process.poll() is None:
                process.kill()
                process.wait()


def enqueue_with_client(env: Env, urls: Sequence[str], total: int) -> None:
    client = Client(env.redis.url(env.template_db), queue=REQUEST_QUEUE)
    try:
        for i in range(total):
            client.get(
                urls[i % len(urls)],
                callback=CALLBACK_NAME,
                callback_args={"i": i},
                raise_error_responses=False,
            )
    finally:
        client.close()


def load_backlog(env: Env, control: CountingRedis) -> None:
    """Flush the run database and copy the template's request queue into it."""
    control.call("FLUSHDB")
    template = redis.Redis.from_url(env.redis.url(env.template_db))
    key = keys.queue(REQUEST_QUEUE)
    try:
        template.execute_command(  # type: ignore[no-untyped-call]
            "COPY", key, key, "DB", env.run_db, "REPLACE"
        )
    except redis.ResponseError:  # Redis < 6.2: DUMP/RESTORE
        dumped = template.dump(key)
        control.call("RESTORE", key, 0, dumped, "REPLACE")
    finally:
        template.close()
    control.call("SADD", keys.QUEUES, REQUEST_QUEUE)


def push_paced(
    control: CountingRedis, raws: Sequence[bytes], rate: float
) -> tuple[dict[int, float], float, int]:
    """Push the template's jobs one at a time at ``rate``/s, each with ``enqueued_at`` set to
    the push time (as Sidekiq's client stamps it); returns enqueued_at by callback_args "i"."""
    enqueued: dict[int, float] = {}
    interval = 1.0 / rate
    started = time.perf_counter()
    behind = 0
    key = keys.queue(REQUEST_QUEUE)
    for n, raw in enumerate(raws):
        delay = started + n * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        elif delay < -0.01:
            behind += 1
        now = time.time()
        job = ENQUEUED_AT.sub(f'"enqueued_at":{now!r}'.encode(), raw, count=1)
        match = re.search(rb'\{"i":(\d+)\}', raw)
        if match:
            enqueued[int(match.group(1))] = now
        control.pipeline(("SADD", keys.QUEUES, REQUEST_QUEUE), ("LPUSH", key, job))
    return enqueued, time.perf_counter() - started, behind


# --- one run of one side ---


@dataclass
class Run:
    side: Side
    processes: str
    jobs: int
    failure: str | None = None
    callbacks: Callbacks = field(default_factory=Callbacks)
    seconds: float = math.nan  # ready -> last callback
    active_seconds: float = math.nan  # the same without pauses > 1 s between callbacks
    first_seconds: float = math.nan
    ready_after: float = math.nan  # start -> the first process ready
    all_ready_after: float = math.nan  # start -> every process ready
    cpu: float = math.nan
    user: float = math.nan
    sys: float = math.nan
    switches: int = 0
    whole_cpu: float = math.nan  # wait4: the root and every descendant it reaped, whole life
    whole_switches: int = 0  # the same for context switches
    rss: list[ProcSample] = field(default_factory=list)
    failed: int = 0  # stat:failed: executions that raised (then retried, or dead)
    retries: int = 0  # still in the retry set at the end
    dead: int = 0
    refusals: int = 0
    left: int = 0
    reads: int = 0
    commands: int = 0
    nginx_cpu: float = 0.0
    redis_cpu: float = 0.0
    paced_rate: float = math.nan
    paced_behind: int = 0
    delay_ms: float = 0.0
    log: Path = Path("/dev/null")

    @property
    def done(self) -> int:
        return self.callbacks.unique

    @property
    def jobs_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else math.nan

    @property
    def active_jobs_per_second(self) -> float:
        return self.done / self.active_seconds if self.active_seconds > 0 else math.nan

    @property
    def cpu_ms_per_job(self) -> float:
        return self.cpu / self.done * 1000 if self.done else math.nan

    @property
    def rss_total(self) -> float:
        return sum(sample.hwm_mb for sample in self.rss) if self.rss else math.nan

    @property
    def errors(self) -> int:
        return self.callbacks.errors + max(self.failed, self.retries + self.dead)

    @property
    def added_ms(self) -> list[float]:
        return [latency - self.delay_ms for latency in self.callbacks.latencies_ms]

    def per_job(self, value: int) -> float:
        return value / self.done if self.done else math.nan


def start_side(env: Env, scenario: Scenario, side: Side, processes: str, label: str) -> list[Child]:
    logs = env.directory / "logs"
    logs.mkdir(exist_ok=True)
    if side == "ours":
        argv = ours_argv(env, scenario, processes)
        return [Child(argv, clean_env(), logs / f"{label}.log", label)]
    assert env.oracle is not None
    argv = [
        str(env.oracle / "bin" / "processor_server.sh"),
        "-r",
        str(SCRIPTS / "bench_gem_boot.rb"),
    ]
    variables = gem_env(env, scenario)
    count = expected_processes(processes)
    names = [label] if count == 1 else [f"{label}.{i}" for i in range(count)]
    return [Child(argv, variables, logs / f"{name}.log", name) for name in names]


def wait_ready(
    control: CountingRedis, children: Sequence[Child], expected: int
) -> tuple[float, dict[int, ProcSample]]:
    """Poll Sidekiq's ``processes`` set until ``expected`` processes of these trees beat.

    Returns the time the first one appeared and the CPU baselines: each worker process
    sampled when it appeared, every other tree member (a supervisor) when the first did.
    """
    seen: set[bytes] = set()
    baselines: dict[int, ProcSample] = {}
    first: float | None = None
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        identities: set[bytes] = control.call("SMEMBERS", keys.PROCESSES)
        for identity in identities - seen:
            info = control.call("HGET", identity, "info")
            if not info:
                continue
            seen.add(identity)
            pid = int(json.loads(info).get("pid", 0))
            if first is None:
                first = time.time()
                for child in children:
                    baselines.update(sample_tree([child.pid]))
            sample = sample_process(pid)
            if sample is not None:
                baselines[pid] = sample
        if first is not None and len(seen) >= expected:
            return first, baselines
        for child in children:
            if not child.alive():
                raise BenchError(
                    f"{child.label} exited ({child.exit_code}) before it was ready: "
                    f"{tail(child.log)}"
                )
        if time.monotonic() > deadline:
            raise BenchError(
                f"{len(seen)}/{expected} processes ready after {READY_TIMEOUT:.0f} s: "
                f"{tail(children[0].log)}"
            )
        time.sleep(READY_POLL)


def wait_done(
    control: CountingRedis, children: Sequence[Child], total: int, stall: float
) -> str | None:
    """Poll LLEN of the callback queue until ``total``; the reason when it never got there."""
    key = keys.queue(CALLBACK_QUEUE)
    last, last_change = -1, time.monotonic()
    deadline = time.monotonic() + max(300.0, total / 50)
    while True:
        done = int(control.call("LLEN", key))
        now = time.monotonic()
        if done >= total:
            return None
        if done != last:
            last, last_change = done, now
        for child in children:
            if not child.alive():
                return f"{child.label} exited ({child.exit_code}) at {done}/{total} callbacks"
        if now - last_change > stall:
            return f"no new callback for {stall:.0f} s at {done}/{total}{state(control)}"
        if now > deadline:
            return f"timeout at {done}/{total} callbacks{state(control)}"
        time.sleep(DONE_POLL)


def state(control: CountingRedis) -> str:
    """Where the jobs are when a run gives up: queued, busy in a process, retrying."""
    queued = int(control.call("LLEN", keys.queue(REQUEST_QUEUE)))
    busy = 0
    for identity in control.call("SMEMBERS", keys.PROCESSES):
        busy += int(control.call("HGET", identity, "busy") or 0)
    retrying = int(control.call("ZCARD", keys.RETRY))
    return f" ({queued} queued, {busy} busy in the processes, {retrying} in retry)"


def stop_children(children: Sequence[Child]) -> None:
    for child in children:
        child.signal(signal.SIGTERM)
    deadline = time.monotonic() + SHUTDOWN_TIMEOUT + 15
    for child in children:
        if not child.wait(max(0.0, deadline - time.monotonic())):
            print(f"      {child.label} did not stop in time: SIGKILL")
            child.kill_tree()


def run_side(
    env: Env,
    scenario: Scenario,
    side: Side,
    processes: str,
    backlog: Backlog,
    paced_rate: float = math.nan,
) -> Run:
    """One measured run of one side on a fresh copy of the backlog; never raises BenchError."""
    env.runs += 1
    label = f"{env.runs:02d}-{scenario.name}-{side}-p{processes}"
    run = Run(side, processes, scenario.jobs, delay_ms=scenario.delay_ms)
    control = CountingRedis(env.redis.url(env.run_db))
    children: list[Child] = []
    profiler: subprocess.Popen[bytes] | None = None
    try:
        if scenario.kind == "paced":
            control.call("FLUSHDB")
        else:
            load_backlog(env, control)
        started = time.time()
        children = start_side(env, scenario, side, processes, label)
        run.log = children[0].log
        ready_at, baselines = wait_ready(control, children, expected_processes(processes))
        run.ready_after = ready_at - started
        run.all_ready_after = time.time() - started
        if env.args.profile is not None and side == "ours":
            profiler = start_profiler(env.args.profile, label, children[0].pid)
        if scenario.kind == "paced":
            # both sides past their start-up before the first push; the window starts here
            time.sleep(PACED_SETTLE)
            baselines = sample_tree([child.pid for child in children])
        nginx_before, redis_before = process_cpu(env.nginx.pid), process_cpu(env.redis.pid)
        reads_before, commands_before = control.stats()
        trips_before, own_before = control.trips, control.commands
        enqueued: dict[int, float] | None = None
        if scenario.kind == "paced":
            enqueued, seconds, run.paced_behind = push_paced(control, backlog.raws, paced_rate)
            run.paced_rate = len(backlog.raws) / seconds if seconds > 0 else math.nan
        run.failure = wait_done(control, children, scenario.jobs, env.args.stall)
        # the harness's own traffic since the first INFO: LLEN polls, paced pushes, one INFO
        own_trips = control.trips - trips_before + 1
        own_commands = control.commands - own_before + 1
        end = sample_tree([child.pid for child in children])
        reads_after, commands_after = control.stats()
        run.nginx_cpu = process_cpu(env.nginx.pid) - nginx_before
        run.redis_cpu = process_cpu(env.redis.pid) - redis_before
        run.reads = reads_after - reads_before - own_trips
        run.commands = commands_after - commands_before - own_commands
        run.user = sum(
            s.user - baselines[p].user if p in baselines else s.user for p, s in end.items()
        )
        run.sys = sum(s.sys - baselines[p].sys if p in baselines else s.sys for p, s in end.items())
        run.cpu = run.user + run.sys
        run.switches = sum(s.switches_since(baselines.get(p)) for p, s in end.items())
        run.rss = sorted(end.values(), key=lambda sample: -sample.hwm_mb)
        stop_profiler(profiler)
        stop_children(children)
        # wait4 reports the child and every descendant it reaped (a supervisor's children)
        usages = [child.rusage for child in children if child.rusage is not None]
        run.whole_cpu = sum(u.ru_utime + u.ru_stime for u in usages)
        run.whole_switches = sum(u.ru_nvcsw + u.ru_nivcsw for u in usages)
        for child in children:
            if child.exit_code not in (0, None) and run.failure is None:
                run.failure = f"{child.label} exit code {child.exit_code}: {tail(child.log, 3)}"
        raws: list[bytes] = control.call("LRANGE", keys.queue(CALLBACK_QUEUE), 0, -1)
        run.callbacks = read_callbacks(raws, enqueued)
        if run.callbacks.last_at:
            run.seconds = run.callbacks.last_at - ready_at
            run.active_seconds = run.callbacks.active_seconds(ready_at)
            run.first_seconds = run.callbacks.first_at - ready_at
        run.failed = int(control.call("GET", keys.STAT_FAILED) or 0)
        run.retries = int(control.call("ZCARD", keys.RETRY))
        run.dead = int(control.call("ZCARD", keys.DEAD))
        run.refusals = int(control.call("HGET", keys.TOTALS, "max_capacity_exceeded") or 0)
        run.left = int(control.call("LLEN", keys.queue(REQUEST_QUEUE)))
        if run.failure is None and run.done < scenario.jobs:
            run.failure = f"{run.done}/{scenario.jobs} distinct callbacks"
    except BenchError as exc:
        run.failure = str(exc)
    finally:
        stop_profiler(profiler)
        for child in children:
            if child.alive():
                child.kill_tree()
        control.close()
    return run


# --- profiler hook ---


def start_profiler(directory: Path, label: str, pid: int) -> subprocess.Popen[bytes]:
    """Attach ``py-spy record --subprocesses --gil`` (raw) to our worker's tree until stopped."""
    binary = Path(sys.executable).with_name("py-spy")
    if not binary.exists():
        raise BenchError(f"--profile needs py-spy: {sys.executable} -m pip install py-spy")
    directory.mkdir(parents=True, exist_ok=True)
    output = directory / f"{label}.txt"
    command = [str(binary), "record", "--pid", str(pid), "--subprocesses", "--rate", "250"]
    command += ["--format", "raw", "--gil", "--output", str(output)]
    profiler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"      profiling ours into {output} (its CPU figures include py-spy's pauses)")
    return profiler


def stop_profiler(profiler: subprocess.Popen[bytes] | None) -> None:
    if profiler is None or profiler.poll() is not None:
        return
    profiler.send_signal(signal.SIGINT)
    try:
        profiler.wait(30)
    except subprocess.TimeoutExpired:
        profiler.kill()
        profiler.wait()


# --- reporting ---


def describe_run(run: Run, scenario: Scenario) -> str:
    c = run.callbacks
    who = f"{run.side:<4} p{run.processes}"
    if run.failure and not c.count:
        return (
            f"    {who}: NOT MEASURED: {run.failure}\n"
            f"      log: {tail(run.log, 3)} (--keep keeps the logs)"
        )
    protocols = ", ".join(
        f"{name} {count * 100 / max(1, c.count):.0f}%"
        for name, count in sorted(c.protocols.items())
    )
    rss = " + ".join(f"{s.name}:{s.hwm_mb:.0f}" for s in run.rss[:4])
    if len(run.rss) > 4:
        rss += f" + {len(run.rss) - 4} more"
    if scenario.kind == "paced":
        head = (
            f"{c.unique:,} jobs pushed at {fmt(run.paced_rate)}/s; added latency p50 "
            f"{fmt(percentile(run.added_ms, 0.5), 2)} ms, "
            f"p99 {fmt(percentile(run.added_ms, 0.99), 2)} ms"
            + (f" (pusher fell behind {run.paced_behind}x)" if run.paced_behind else "")
        )
    elif scenario.kind == "fanout":
        head = (
            f"{c.unique:,} callbacks, wall {fmt(run.seconds, 2)} s ready -> last callback "
            f"(first after {fmt(run.first_seconds, 2)} s)"
        )
    else:
        head = (
            f"{c.unique:,} callbacks in {fmt(run.seconds, 2)} s = {fmt(run.jobs_per_second)} jobs/s"
        )
        if run.active_seconds < run.seconds - 1:
            head += (
                f" ({fmt(run.active_jobs_per_second)} jobs/s leaving out "
                f"{run.seconds - run.active_seconds:.1f} s of pauses > 1 s)"
            )
    lines = [
        f"    {who}: {head}; ready after {fmt(run.ready_after, 1)} s"
        + (
            f" (all {expected_processes(run.processes)} after {fmt(run.all_ready_after, 1)} s)"
            if run.all_ready_after - run.ready_after > 0.05
            else ""
        ),
        f"      CPU {fmt(run.cpu_ms_per_job, 3)} ms/job (user {fmt(run.user, 2)} s + sys "
        f"{fmt(run.sys, 2)} s, {len(run.rss)} processes; wait4 whole life "
        f"{fmt(run.whole_cpu, 2)} s); {fmt(run.per_job(run.switches), 1)} context switches/job "
        f"({fmt(run.per_job(run.whole_switches), 1)} whole life)",
        f"      peak RSS {fmt(run.rss_total)} MB ({rss} MB); Redis "
        f"{fmt(run.per_job(run.reads), 2)} round trips/job, "
        f"{fmt(run.per_job(run.commands), 2)} commands/job; nginx "
        f"{run.nginx_cpu:.1f} s, redis {run.redis_cpu:.1f} s CPU",
        f"      errors: {c.errors} error callbacks, {run.failed} failed executions (retried), "
        f"{run.retries} in retry, {run.dead} dead, {run.refusals} capacity refusals, "
        f"{run.left} left in queue"
        + (f", {c.count - c.unique} duplicate callbacks" if c.count > c.unique else "")
        + (f"; protocol {protocols}" if protocols else "")
        + (f"; e.g. {'; '.join(c.error_samples)}" if c.error_samples else ""),
    ]
    if run.failure:
        lines.append(f"      INCOMPLETE: {run.failure}")
        lines.append(f"      log: {tail(run.log, 3)} (--keep keeps the logs)")
    return "\n".join(lines)


Metric = tuple[str, Callable[[Run], float], int, bool]  # label, value, digits, ratio?


def metrics(kind: Kind) -> list[Metric]:
    common: list[Metric] = [
        ("CPU ms/job", lambda r: r.cpu_ms_per_job, 3, True),
        ("peak RSS MB (sum)", lambda r: r.rss_total, 0, True),
        ("errors (cb + failed)", lambda r: float(r.errors), 0, False),
        ("capacity refusals", lambda r: float(r.refusals), 0, False),
        ("Redis round trips/job", lambda r: r.per_job(r.reads), 2, True),
        ("Redis commands/job", lambda r: r.per_job(r.commands), 2, True),
    ]
    if kind == "paced":
        return [
            ("pushed jobs/s", lambda r: r.paced_rate, 0, False),
            ("added latency p50 ms", lambda r: percentile(r.added_ms, 0.5), 2, True),
            ("added latency p99 ms", lambda r: percentile(r.added_ms, 0.99), 2, True),
            *common,
        ]
    if kind == "fanout":
        return [
            ("wall s ready->last", lambda r: r.seconds, 2, True),
            ("first callback s", lambda r: r.first_seconds, 2, False),
            *common,
        ]
    return [
        ("jobs/s", lambda r: r.jobs_per_second, 0, True),
        ("jobs/s without pauses", lambda r: r.active_jobs_per_second, 0, True),
        *common,
    ]


def usable(runs: Sequence[Run]) -> list[Run]:
    return [run for run in runs if run.callbacks.count]


def table(scenario: Scenario, ours: Sequence[Run], gem: Sequence[Run], note: str) -> None:
    repeats = max(len(ours), len(gem))
    print(f"  {scenario.name}: medians of {repeats} run(s) {note}")
    header = f"    {'':<24}{'ours':>12}{'gem':>12}{'ours/gem':>10}"
    print(header)
    ours_ok, gem_ok = usable(ours), usable(gem)
    for label, value, digits, ratio in metrics(scenario.kind):
        mine = median([value(run) for run in ours_ok])
        theirs = median([value(run) for run in gem_ok])
        quotient = mine / theirs if ratio and theirs and not math.isnan(theirs) else math.nan
        print(
            f"    {label:<24}{fmt(mine, digits):>12}{fmt(theirs, digits):>12}"
            f"{fmt(quotient, 2) if ratio else '':>10}"
        )
    if scenario.kind == "fanout" and scenario.processes == ("1",):
        wall, rss = median([r.seconds for r in ours_ok]), median([r.rss_total for r in ours_ok])
        print(f"    goal (ours): < 3 s wall, < 300 MB: {fmt(wall, 2)} s, {fmt(rss)} MB")
    print(flush=True)


@dataclass
class Outcome:
    scenario: Scenario
    variant: str
    ours: list[Run]
    gem: list[Run]
    failures: list[str]


def run_scenario(env: Env, scenario: Scenario, outcomes: list[Outcome]) -> list[Outcome]:
    """Every variant (``--processes`` value) of one scenario, ``--repeat`` interleaved runs of
    each side; prints each run and a table of medians."""
    with_gem = scenario.gem and env.oracle is not None and "gem" in env.args.sides
    with_ours = "ours" in env.args.sides
    print(
        f"== {scenario.name}: {scenario.jobs:,} jobs, {scenario.path} "
        f"({scenario.delay_ms:g} ms) over {scenario.transport}, max_connections "
        f"{scenario.max_connections:,}"
        + (f", URLs over {scenario.spread} ports" if scenario.spread > 1 else "")
    )
    for processes in scenario.processes:
        per_process = ours_max_connections(scenario, processes) + 256
        if per_process > env.nofile:
            print(
                f"  note: --processes {processes} needs {per_process:,} open files per worker "
                f"process, the limit is {env.nofile:,}: requests beyond it cannot all be in "
                "flight at once (ours warns of Errno::EMFILE), so the wall time includes waiting"
            )
    try:
        rate = paced_rate(env, scenario, outcomes) if scenario.kind == "paced" else math.nan
        backlog = prepare_backlog(env, scenario)
    except BenchError as exc:
        print(f"  NOT MEASURED: the backlog could not be written: {exc}\n")
        return [Outcome(scenario, "-", [], [], [f"backlog: {exc}"])]
    use = (
        "pushed one at a time in each run"
        if scenario.kind == "paced"
        else "copied into a fresh database per run"
    )
    print(
        f"  jobs written by {backlog.writer} in {backlog.seconds:.1f} s "
        f"({backlog.jobs / backlog.seconds:,.0f} jobs/s), {use}"
    )
    print(f"  ours: {' '.join(ours_argv(env, scenario, scenario.processes[0])[1:])}")
    if with_gem:
        print(f"  gem:  processor_server.sh, {gem_settings(env, scenario)}")
    elif not scenario.gem:
        print(f"  {scenario.gem_note}")
    elif env.oracle is None:
        print("  gem side skipped: the oracle is not built (see --help)")
    else:
        print("  gem side skipped (--sides)")
    results = []
    for processes in scenario.processes:
        gem_processes = processes if processes != "auto" else "1"
        ours: list[Run] = []
        gem: list[Run] = []
        for repeat in range(env.args.repeat):
            sides: list[Side] = ["ours", "gem"] if repeat % 2 == 0 else ["gem", "ours"]
            for side in sides:
                if (side == "gem" and not with_gem) or (side == "ours" and not with_ours):
                    continue
                run = run_side(
                    env,
                    scenario,
                    side,
                    processes if side == "ours" else gem_processes,
                    backlog,
                    rate,
                )
                (ours if side == "ours" else gem).append(run)
                print(describe_run(run, scenario), flush=True)
        failures = [f"{r.side} p{r.processes}: {r.failure}" for r in ours + gem if r.failure]
        note = f"(--processes {processes}" + (
            f"; gem: {gem_processes} Sidekiq process(es))" if with_gem else ")"
        )
        if scenario.kind == "paced":
            note += f" at {fmt(rate)} jobs/s"
        table(scenario, ours, gem, note)
        results.append(Outcome(scenario, processes, ours, gem, failures))
    if len(scenario.processes) > 1:
        curve(results)
    return results


def curve(results: Sequence[Outcome]) -> None:
    print("  scaling curve (medians):")
    print(
        f"    {'processes':<12}{'ours jobs/s':>13}{'CPU ms/job':>12}{'gem jobs/s':>12}"
        f"{'ours/gem':>10}"
    )
    base = math.nan
    for outcome in results:
        mine = median([r.jobs_per_second for r in usable(outcome.ours)])
        cpu = median([r.cpu_ms_per_job for r in usable(outcome.ours)])
        theirs = median([r.jobs_per_second for r in usable(outcome.gem)])
        if math.isnan(base):
            base = mine
        print(
            f"    {outcome.variant:<12}{fmt(mine):>13}{fmt(cpu, 3):>12}{fmt(theirs):>12}"
            f"{fmt(mine / theirs if theirs else math.nan, 2):>10}"
            f"   x{fmt(mine / base if base else math.nan, 2)} vs the first"
        )
    print(flush=True)


def paced_rate(env: Env, scenario: Scenario, outcomes: Sequence[Outcome]) -> float:
    """``--paced-rate``, else half the slower side's throughput on the base scenario (this
    invocation's, or a short calibration run of it)."""
    if env.args.paced_rate:
        print(f"  paced at {env.args.paced_rate:g} jobs/s (--paced-rate)")
        return float(env.args.paced_rate)
    measured = [o for o in outcomes if o.scenario.name == scenario.base and o.variant == "1"]
    if not measured:
        base = next(s for s in catalogue(1.0, 0) if s.name == scenario.base)
        jobs = max(500, round(base.jobs * (0.1 if env.args.quick else 0.25)))
        base = replace(base, jobs=jobs)
        print(f"  calibrating on {base.name} ({jobs:,} jobs, one run per side):")
        backlog = prepare_backlog(env, base)
        with_gem = env.oracle is not None and "gem" in env.args.sides
        with_ours = "ours" in env.args.sides
        ours = [run_side(env, base, "ours", "1", backlog)] if with_ours else []
        gem = [run_side(env, base, "gem", "1", backlog)] if with_gem else []
        for run in ours + gem:
            print(describe_run(run, base))
        measured = [Outcome(base, "1", ours, gem, [])]
    # without pauses: the gem's capacity refusals wait out Sidekiq's retry delay, idle
    rates = [median([r.active_jobs_per_second for r in usable(o.ours)]) for o in measured]
    rates += [median([r.active_jobs_per_second for r in usable(o.gem)]) for o in measured]
    rates = [rate for rate in rates if not math.isnan(rate)]
    if not rates:
        print("  no measured throughput to pace by: 200 jobs/s")
        return 200.0
    rate = min(rates) / 2
    print(
        f"  paced at {rate:,.0f} jobs/s: half the slower side's throughput (without pauses) "
        f"on {scenario.base}"
    )
    return rate


def summary(outcomes: Sequence[Outcome]) -> None:
    """One line per scenario variant: medians of each side and ours/gem."""
    print("Summary (medians; ratio = ours/gem)")
    print(
        f"  {'scenario':<13}{'procs':>5} {'metric':<10}{'ours':>9}{'gem':>9}{'ratio':>7}"
        f"  {'no pauses':>9}{'gem':>6}{'ratio':>6}  {'CPU ms/job':>10}{'gem':>7}{'ratio':>6}"
        f"  {'RSS MB':>6}{'gem':>5}  errors"
    )
    for outcome in outcomes:
        s = outcome.scenario
        ours, gem = usable(outcome.ours), usable(outcome.gem)
        main: Callable[[Run], float]
        if s.kind == "paced":
            main, unit, digits = (lambda r: percentile(r.added_ms, 0.99)), "p99 ms", 1
        elif s.kind == "fanout":
            main, unit, digits = (lambda r: r.seconds), "wall s", 2
        else:
            main, unit, digits = (lambda r: r.jobs_per_second), "jobs/s", 0

        def pair(
            value: Callable[[Run], float], ours: list[Run] = ours, gem: list[Run] = gem
        ) -> tuple[float, float, float]:
            a, b = median([value(r) for r in ours]), median([value(r) for r in gem])
            return a, b, (a / b if b and not math.isnan(b) else math.nan)

        a, b, ratio = pair(main)
        line = f"  {s.name:<13}{outcome.variant:>5} {unit:<10}{fmt(a, digits):>9}"
        line += f"{fmt(b, digits):>9}{fmt(ratio, 2):>7}"
        if s.kind == "backlog":
            a, b, ratio = pair(lambda r: r.active_jobs_per_second)
            line += f"  {fmt(a):>9}{fmt(b):>6}{fmt(ratio, 2):>6}"
        else:
            line += " " * 23
        a, b, ratio = pair(lambda r: r.cpu_ms_per_job)
        line += f"  {fmt(a, 3):>10}{fmt(b, 3):>7}{fmt(ratio, 2):>6}"
        a, b, _ = pair(lambda r: r.rss_total)
        line += f"  {fmt(a):>6}{fmt(b):>5}"
        a, b, _ = pair(lambda r: float(r.errors))
        line += f"  {fmt(a)}/{fmt(b)}"
        if outcome.failures:
            line += "  INCOMPLETE"
        print(line)
    print(
        "  (no pauses: jobs/s leaving out pauses > 1 s between callbacks, e.g. jobs waiting out "
        "Sidekiq's retry delay;\n   errors: error callbacks + failed executions, ours/gem)"
    )


# --- the command line ---


EPILOG = """\
scenarios (--scenarios, comma-separated; "paced" = the three paced_*; default all):
  instant       20,000 jobs, 0 ms endpoint, HTTP/1.1, max_connections 256
  delay50       20,000 jobs, 50 ms endpoint, HTTP/1.1, max_connections 256
  tls_h1        10,000 jobs, 0 ms endpoint, TLS HTTP/1.1 (both sides told http1)
  tls_h2        10,000 jobs, 0 ms endpoint, TLS, HTTP/2 negotiated by ALPN (ours --protocol
                auto, the gem's protocol unset); the callbacks' bodies show what was spoken
  fanout        10,000 x 2 s requests, max_connections 10,000, one process: wall time ready ->
                last callback and peak RSS (goal for ours: < 3 s, < 300 MB)
  fanout50k     50,000 x 2 s requests, ours with --processes auto (max_connections split over
                them), URLs over 4 nginx ports; gem side skipped unless --gem-fanout50k
  processes     the instant scenario with --processes 1 and 2 (the gem with 1 and 2 Sidekiq
                processes): the scaling curve
  paced_h1, paced_tls_h1, paced_tls_h2
                3,000 jobs pushed one at a time (no backlog) at half the slower side's
                throughput on instant / tls_h1 / tls_h2 (calibrated when those did not run):
                added latency = callback enqueued_at - request enqueued_at - endpoint delay

--quick divides every job count by 10. Both sides log at --log-level (default warning; info
is each side's stock level, where Sidekiq logs two lines per job).

The real gem: $ORACLE_ROOT, else .oracle/ (scripts/bench_pipeline builds ../shared/oracle
into .oracle/ when it is beside the clone and nothing is built). Without it the jobs are
written by our Client and only ours runs.

Figures are printed, never asserted. Exit status 1 when a scenario could not be measured
(a side not ready, too few callbacks, a crash): the reason is printed.
"""


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench_pipeline",
        description=(__doc__ or "").replace("``", "").rsplit("\n\nNumbers", 1)[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--scenarios", default="all", help="comma-separated names, or all")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="R",
        help="runs per side, interleaved (ours, gem, gem, ours, ...); tables show medians "
        "(default 1; 3 for figures worth quoting)",
    )
    parser.add_argument("--quick", action="store_true", help="job counts / 10, for smoke runs")
    parser.add_argument(
        "--sides",
        default="ours,gem",
        help="which sides to run: ours,gem (default), ours or gem",
    )
    parser.add_argument(
        "--gem-fanout50k", action="store_true", help="run the gem on fanout50k too (slow)"
    )
    parser.add_argument(
        "--gem-concurrency",
        type=int,
        default=10,
        metavar="N",
        help="Sidekiq -c of each gem process: threads handing jobs to its processor "
        "(default 10; 5 and 25 were no faster and 25 refused more jobs at capacity)",
    )
    parser.add_argument(
        "--gem-redis-pool",
        default="auto",
        metavar="N|auto|stock",
        help="size of the gem process's Sidekiq Redis pools (auto: max(concurrency + 5, "
        "min(max_connections, 1000)); stock: Sidekiq's own, 10 connections with a 1 s "
        "checkout timeout for the pool the processor pushes callbacks through)",
    )
    parser.add_argument(
        "--gem-pool-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds a gem fiber may wait for a pooled Redis connection (default 30; "
        "Sidekiq's: 1)",
    )
    parser.add_argument(
        "--paced-rate",
        type=float,
        default=0.0,
        metavar="JOBS_S",
        help="push rate of the paced runs (default: half the measured throughput)",
    )
    parser.add_argument(
        "--paced-jobs", type=int, default=0, metavar="N", help="jobs per paced run (3000)"
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="warning",
        help="log level of both sides (default warning)",
    )
    parser.add_argument(
        "--stall",
        type=float,
        default=40.0,
        metavar="S",
        help="give up a run after S seconds without a new callback (default 40: above "
        "Sidekiq's first retry delay)",
    )
    parser.add_argument(
        "--nginx-workers", type=int, default=1, metavar="N", help="nginx worker processes (1)"
    )
    parser.add_argument(
        "--redis-url",
        metavar="URL",
        help="use this Redis instead of a private redis-server: its db and db+1 are FLUSHED "
        "(INFO counters are then shared with whatever else uses it)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the working directory (each run's log under logs/, nginx's files) and "
        "print its path",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="attach py-spy record --subprocesses --gil to ours; DIR/<run>.txt per run",
    )
    args = parser.parse_args(argv)
    args.repeat = max(1, args.repeat)
    if args.gem_redis_pool not in ("auto", "stock") and not args.gem_redis_pool.isdigit():
        parser.error("--gem-redis-pool takes a number, auto or stock")
    args.sides = {side.strip() for side in args.sides.split(",") if side.strip()}
    if not args.sides or args.sides - {"ours", "gem"}:
        parser.error("--sides takes ours, gem or ours,gem")
    return args


def print_environment(env: Env, soft: int, hard: int, note: str) -> None:
    nginx_version = subprocess.run(
        [shutil.which("nginx") or "nginx", "-v"], capture_output=True, text=True, check=False
    ).stderr.strip()
    somaxconn = Path("/proc/sys/net/core/somaxconn").read_text().strip()
    ports = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    client = redis.Redis.from_url(env.redis.url())
    redis_version = client.info("server").get("redis_version")
    client.close()
    version = subprocess.run(
        [str(env.worker_bin), "version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(
        f"bench_pipeline: {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), "
        f"load {os.getloadavg()[0]:.2f}, Python {platform.python_version()}, {version}, "
        f"{nginx_version.replace('nginx version: ', '')}, redis {redis_version}"
    )
    print(
        f"open files (RLIMIT_NOFILE, inherited by every child): soft {soft}, hard {hard}"
        + (f"; {note}" if note else "")
        + f"; somaxconn {somaxconn}; ephemeral ports {ports[0]}-{ports[1]}"
    )
    if env.oracle is not None:
        print(f"gem: {env.oracle} (patient_http 1.3.0, patient_http-sidekiq 1.0.1, Sidekiq 7.3.10)")
    else:
        print("gem: not built: only ours runs, on jobs written by our Client")
    print(
        f"nginx {env.nginx.urls('/', tls=False, spread=9)} HTTP/1.1, "
        f"https://127.0.0.1:{env.nginx.https_port} TLS (h2, http/1.1 by ALPN), "
        f"{env.nginx.workers} worker(s) of {env.nginx.connections:,} connections; "
        f"redis {env.redis.url()} (+ db {env.template_db} for the backlog templates)"
    )
    print()


def _exit_on_signal(number: int, frame: object) -> None:
    raise SystemExit(128 + number)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    chosen = choose(args)
    if args.profile is not None and not Path(sys.executable).with_name("py-spy").exists():
        raise SystemExit(
            f"bench_pipeline: --profile needs py-spy: {sys.executable} -m pip install py-spy"
        )
    worker_bin = Path(sys.executable).with_name("patient-sidekiq")
    if not worker_bin.exists():
        raise SystemExit(f"bench_pipeline: {worker_bin} is missing (run scripts/setup)")
    biggest = max(
        (
            s.jobs
            if s.kind == "fanout"
            else s.max_connections * expected_processes(s.processes[-1])
            for s in chosen
        ),
        default=1024,
    )
    soft, hard, note = raise_nofile(biggest + 4096)
    # A TERM (or a hang-up) unwinds like Ctrl-C, so every server and worker is stopped.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)
    outcomes: list[Outcome] = []
    with ExitStack() as stack:
        if args.keep:
            directory = Path(tempfile.mkdtemp(prefix="bench_pipe."))
            stack.callback(print, f"working directory kept: {directory}")
        else:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_pipe.")))
        try:
            redis_info = stack.enter_context(redis_server(directory, args.redis_url))
            # enough nginx workers for the biggest fan-out, each holding `soft` - 100 connections
            fanouts = [s.jobs for s in chosen if s.kind == "fanout"]
            workers = max(1, args.nginx_workers, math.ceil(max(fanouts, default=0) / (soft - 100)))
            nginx = stack.enter_context(
                nginx_server(
                    directory,
                    workers=workers,
                    nofile=soft,
                    ports=max(s.spread for s in chosen) if chosen else 1,
                )
            )
        except BenchError as exc:
            print(f"bench_pipeline: {exc}", file=sys.stderr)
            return 1
        env = Env(directory, redis_info, nginx, oracle_root(), args, worker_bin, soft)
        print_environment(env, soft, hard, note)
        if env.oracle is None and ORACLE_SOURCE.exists():
            print(
                f"(the oracle's sources are in {ORACLE_SOURCE}: scripts/bench_pipeline builds it)"
            )
        for scenario in chosen:
            outcomes += run_scenario(env, scenario, outcomes)
        summary(outcomes)
        errors = tail(nginx.error_log, 3)
        if errors not in ("(no log)", "(empty log)"):
            print(f"nginx error.log (last lines): {errors}")
    failed = [f"{o.scenario.name}: {failure}" for o in outcomes for failure in o.failures]
    if failed:
        print("\nNot (fully) measured:")
        for line in failed:
            print(f"  {line}")
        return 1
    return 0


if __name__ == "__main__":
    with suppress(KeyboardInterrupt):
        sys.exit(main(sys.argv[1:]))
    sys.exit(130)
