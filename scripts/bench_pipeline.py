"""End-to-end benchmark of the RequestWorker pipeline: Redis queue -> HTTP -> callback job.

The parent process starts a private nginx (echo module) and redis-server, pre-fills
``PatientHttp::Sidekiq::RequestWorker`` jobs built exactly as the Ruby gem and Sidekiq's
client build them, and runs ONE worker process per measurement (this file with ``--worker``),
so the worker's CPU (user+sys), context switches and peak RSS (``os.wait4``) are its own.
"Ready" is when ``Launcher.run`` has started (the process is in Sidekiq's and the gem's
process sets); the worker prints it on stdout. Callbacks are counted with LLEN every 50 ms,
but times come from the callback jobs' own ``enqueued_at`` (stamped by the worker at push).

Per scenario:

* backlog: N jobs already queued; jobs/s from "worker ready" (``Launcher.run`` started) to
  the last callback's ``enqueued_at``, worker CPU per job over that window, peak RSS,
  capacity refusals, error callbacks, end-to-end p50/p99 (mostly queueing, for reference);
* paced: a fresh worker with no backlog gets jobs pushed one at a time at a steady rate;
  added latency = callback ``enqueued_at`` - request ``enqueued_at`` - the endpoint's delay;
* fan-out: 5,000 jobs on the 2 s endpoint with max_connections = concurrency = 5,000;
  wall time from ready to the 5,000th callback, and peak RSS.

Numbers are printed, never asserted. Usage: scripts/bench_pipeline --help
(``--scenarios`` picks a subset, ``--processes N`` runs N workers per scenario, ``--profile DIR``
attaches ``py-spy record --gil`` to the worker).
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import logging
import math
import os
import platform
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from uuid import uuid4

import redis
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from patient_sidekiq import keys
from patient_sidekiq.http.settings import HttpSettings
from patient_sidekiq.sidekiq.job import Job
from patient_sidekiq.sidekiq.launcher import Launcher, WorkerSettings
from patient_sidekiq.sidekiq.processor import Dispatcher
from patient_sidekiq.wire.jobs import CALLBACK_WORKER, REQUEST_WORKER
from patient_sidekiq.worker.request_call import CallbackRouting, RequestWorkerSettings
from patient_sidekiq.worker.request_worker import RequestWorker

# Run as ``python scripts/bench_pipeline.py``: the repository root on sys.path for tests.support.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.programs import free_port, stop_process
from tests.support.redis import running_redis

QUEUE = "bench"
CALLBACK_QUEUE = "bench_callbacks"
CALLBACK_NAME = "BenchCallback"
BODY = '{"ok":true}'
ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
POLL_SECONDS = 0.05
STALL_SECONDS = 30.0
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0

Protocol = Literal["auto", "http1", "http2"]


class BenchError(Exception):
    """A scenario could not be measured (the message says why)."""


# --- servers ---


@dataclass(frozen=True)
class RedisServer:
    url: str
    pid: int | None


@contextmanager
def redis_server(directory: Path) -> Iterator[RedisServer]:
    """A private redis-server (tests/support/redis.py) on a free port, or REDIS_URL (which is
    then FLUSHDB'd per run)."""
    if os.environ.get("REDIS_URL"):
        yield RedisServer(os.environ["REDIS_URL"], None)
        return
    data = directory / "redis"
    data.mkdir()
    binary = shutil.which("redis-server") or "redis-server"
    with running_redis(data, binary=binary) as server:
        yield RedisServer(server.url, server.pid)


def write_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed P-256 certificate for 127.0.0.1/localhost; also the worker's CA bundle."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench_pipeline")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


NGINX_CONF = """\
load_module @ECHO_MODULE@;
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile @NOFILE@;
pid @DIR@/nginx.pid;
error_log @DIR@/error.log warn;
events {
    worker_connections @CONNECTIONS@;
    multi_accept on;
}
http {
    access_log off;
    client_body_temp_path @DIR@/client_body;
    proxy_temp_path @DIR@/proxy;
    fastcgi_temp_path @DIR@/fastcgi;
    uwsgi_temp_path @DIR@/uwsgi;
    scgi_temp_path @DIR@/scgi;
    default_type application/json;
    keepalive_requests 100000;
    keepalive_timeout 300s;
    http2_max_concurrent_streams 128;
    server {
        listen 127.0.0.1:@HTTP_PORT@ backlog=65535;
        listen 127.0.0.1:@HTTPS_PORT@ ssl http2 backlog=65535;
        ssl_certificate @CERT@;
        ssl_certificate_key @KEY@;
        ssl_session_cache shared:bench:10m;
        location = /fast { return 200 '@BODY@'; }
        location = /sleep50 { echo_sleep 0.05; echo -n '@BODY@'; }
        location = /sleep2000 { echo_sleep 2; echo -n '@BODY@'; }
    }
}
"""


@dataclass(frozen=True)
class NginxServer:
    http_port: int
    https_port: int
    cert_path: Path
    pid: int
    error_log: Path

    def url(self, path: str, *, tls: bool) -> str:
        if tls:
            return f"https://127.0.0.1:{self.https_port}{path}"
        return f"http://127.0.0.1:{self.http_port}{path}"


@contextmanager
def nginx_server(directory: Path) -> Iterator[NginxServer]:
    """A private nginx (1 worker, echo module) with a plain HTTP/1.1 and a TLS+HTTP/2 port."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists() or not Path(ECHO_MODULE).exists():
        raise BenchError(
            "nginx with the echo module is needed: apt-get install nginx libnginx-mod-http-echo "
            "(scripts/bench_pipeline installs them)"
        )
    home = directory / "nginx"
    home.mkdir()
    cert_path, key_path = write_certificate(home)
    http_port, https_port = free_port(), free_port()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = 65536 if hard == resource.RLIM_INFINITY else hard
    replacements = {
        "@ECHO_MODULE@": ECHO_MODULE,
        "@NOFILE@": str(nofile),
        "@CONNECTIONS@": str(max(1024, nofile - 100)),
        "@DIR@": str(home),
        "@HTTP_PORT@": str(http_port),
        "@HTTPS_PORT@": str(https_port),
        "@CERT@": str(cert_path),
        "@KEY@": str(key_path),
        "@BODY@": BODY,
    }
    config = NGINX_CONF
    for placeholder, value in replacements.items():
        config = config.replace(placeholder, value)
    config_path = home / "nginx.conf"
    config_path.write_text(config)
    error_log = home / "error.log"
    process = subprocess.Popen(
        [binary, "-p", str(home), "-e", str(error_log), "-c", str(config_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        for port in (http_port, https_port):
            while True:
                if process.poll() is not None:
                    raise BenchError(f"nginx exited: {tail(error_log)}")
                with socket.socket() as sock:
                    if sock.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if time.monotonic() > deadline:
                    raise BenchError(f"nginx did not listen on {port}: {tail(error_log)}")
                time.sleep(0.02)
        yield NginxServer(http_port, https_port, cert_path, process.pid, error_log)
    finally:
        stop_process(process)


def tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def process_cpu(pid: int | None) -> float:
    """CPU seconds (user+sys) of a process and its direct children (nginx's worker)."""
    if pid is None:
        return 0.0
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    with suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(child) for child in children]
    for each in pids:
        with suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{each}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user+sys) per thread of a live process: "main", then "<comm>/<tid>"."""
    ticks = os.sysconf("SC_CLK_TCK")
    result: dict[str, float] = {}
    with suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with suppress(OSError, ValueError, IndexError):
                name = (
                    "main"
                    if task.name == str(pid)
                    else f"{(task / 'comm').read_text().strip()}/{task.name}"
                )
                stat = (task / "stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                result[name] = (int(fields[11]) + int(fields[12])) / ticks
    return result


# --- jobs, exactly as the gem + Sidekiq's client write them ---


def request_job(url: str, index: int, now: float) -> Job:
    """A RequestWorker job as ``PatientHttp::Sidekiq`` builds it and Sidekiq pushes it."""
    payload: dict[str, Any] = {
        "http_method": "get",
        "url": url,
        "headers": {},
        "body": None,
        "timeout": None,
        "max_redirects": None,
    }
    args = [payload, CALLBACK_NAME, False, {"i": index}, str(uuid4())]
    job = Job.new(REQUEST_WORKER, args, queue=QUEUE, created_at=now)
    # Sidekiq's client stamps enqueued_at last, at push time (float seconds in 7.x).
    return job.with_fields(enqueued_at=now)


def prefill(client: redis.Redis, url: str, total: int) -> tuple[list[float], float]:
    """Queue ``total`` jobs (push_bulk style, 1,000 per LPUSH); their enqueued_at by index."""
    enqueued = [0.0] * total
    started = time.perf_counter()
    for first in range(0, total, 1000):
        now = time.time()
        indexes = range(first, min(first + 1000, total))
        raws = [request_job(url, i, now).raw for i in indexes]
        for i in indexes:
            enqueued[i] = now
        pipe = client.pipeline(transaction=False)
        pipe.sadd(keys.QUEUES, QUEUE)
        pipe.lpush(keys.queue(QUEUE), *raws)
        pipe.execute()
    return enqueued, time.perf_counter() - started


def push_paced(client: redis.Redis, url: str, total: int, rate: float) -> tuple[list[float], float]:
    """Push ``total`` jobs one at a time at ``rate`` per second; their enqueued_at by index."""
    enqueued = [0.0] * total
    interval = 1.0 / rate
    started = time.perf_counter()
    behind = 0
    for i in range(total):
        delay = started + i * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        elif delay < -0.01:
            behind += 1
        now = time.time()
        job = request_job(url, i, now)
        enqueued[i] = now
        pipe = client.pipeline(transaction=False)
        pipe.sadd(keys.QUEUES, QUEUE)
        pipe.lpush(keys.queue(QUEUE), job.raw)
        pipe.execute()
    seconds = time.perf_counter() - started
    if behind:
        print(f"    note: the pusher fell >10 ms behind schedule {behind} times")
    return enqueued, seconds


# --- the worker process ---


def worker_main(config_text: str) -> None:
    """Run one worker (``--worker``): print ``READY {...}`` once in the cluster, stop on TERM."""
    config = json.loads(config_text)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else hard
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    logging.basicConfig(
        level=logging.WARNING, format="  worker %(levelname)s %(name)s: %(message)s"
    )
    http = HttpSettings(
        max_connections=config["max_connections"],
        protocol=config["protocol"],
        ca_bundle=config["ca_bundle"],
    )
    service = RequestWorker(
        RequestWorkerSettings(http=http, routing=CallbackRouting(callback_queue=CALLBACK_QUEUE))
    )
    launcher = Launcher(
        WorkerSettings(
            redis_url=config["redis_url"],
            queues=[(QUEUE, 0)],
            concurrency=config["concurrency"],
            shutdown_timeout=config["shutdown_timeout"],
            handle_os_signals=True,
        ),
        Dispatcher(),
        services=[service],
    )

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(launcher.run)
            usage = resource.getrusage(resource.RUSAGE_SELF)
            ready = {
                "t": time.time(),
                "user": usage.ru_utime,
                "sys": usage.ru_stime,
                "csw": usage.ru_nvcsw + usage.ru_nivcsw,
                "shards": getattr(service._transport, "shard_count", None),
            }
            sys.stdout.write(f"READY {json.dumps(ready)}\n")
            sys.stdout.flush()

    trio.run(run)


class WorkerProcess:
    """The worker child; reaped with ``os.wait4`` so its own rusage is kept."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", json.dumps(config)], stdout=subprocess.PIPE
        )
        self.exit_code: int | None = None
        self.rusage: resource.struct_rusage | None = None

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> dict[str, Any]:
        stdout = self.process.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            readable, _, _ = select.select([stdout], [], [], 0.2)
            if not readable:
                continue
            line = stdout.readline()
            if not line:
                self.stop()
                raise BenchError(f"worker exited before it was ready (exit {self.exit_code})")
            if line.startswith(b"READY "):
                ready: dict[str, Any] = json.loads(line[6:])
                return ready
        raise BenchError(f"worker not ready after {timeout:.0f} s")

    def alive(self) -> bool:
        if self.exit_code is not None:
            return False
        pid, status, usage = os.wait4(self.process.pid, os.WNOHANG)
        if pid == 0:
            return True
        self._reaped(status, usage)
        return False

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM (graceful shutdown), SIGKILL after ``timeout``; always reaps."""
        if not self.alive():
            return
        with suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return
            time.sleep(0.02)
        print(f"    worker did not stop within {timeout:.0f} s: SIGKILL")
        with suppress(ProcessLookupError):
            self.process.kill()
        _, status, usage = os.wait4(self.process.pid, 0)
        self._reaped(status, usage)

    def _reaped(self, status: int, usage: resource.struct_rusage) -> None:
        self.exit_code = os.waitstatus_to_exitcode(status)
        self.rusage = usage
        self.process.returncode = self.exit_code  # so Popen never waits for it again
        if self.process.stdout is not None:
            self.process.stdout.close()


# --- measuring ---


def start_profiler(directory: Path, name: str, pid: int) -> subprocess.Popen[bytes]:
    """Attach ``py-spy record`` (raw, GIL-holding samples) to the worker until stopped."""
    binary = Path(sys.executable).with_name("py-spy")
    if not binary.exists():
        raise BenchError(f"--profile needs py-spy: {sys.executable} -m pip install py-spy")
    directory.mkdir(parents=True, exist_ok=True)
    output = directory / f"{name}.txt"
    command = [str(binary), "record", "--pid", str(pid), "--rate", "250", "--format", "raw"]
    command += ["--gil", "--output", str(output)]
    profiler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"    profiling the worker into {output} (CPU numbers include py-spy's pauses)")
    time.sleep(0.5)  # let py-spy attach before the load matters
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


@dataclass
class Callbacks:
    count: int = 0
    unique: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    first_at: float = math.inf
    last_at: float = 0.0


def read_callbacks(client: redis.Redis, enqueued: Sequence[float]) -> Callbacks:
    """Parse every callback job: error results, duplicates, per-job end-to-end latency."""
    result = Callbacks()
    seen: set[int] = set()
    raws: list[bytes] = client.lrange(keys.queue(CALLBACK_QUEUE), 0, -1)  # type: ignore[assignment]
    for raw in raws:
        job = json.loads(raw)
        result.count += 1
        if job.get("class") != CALLBACK_WORKER:
            continue
        data, kind, _ = job["args"]
        at = float(job["enqueued_at"])
        result.last_at = max(result.last_at, at)
        result.first_at = min(result.first_at, at)
        if kind == "error":
            result.errors += 1
            if len(result.error_samples) < 3:
                message = data.get("message") or data.get("response", {}).get("status")
                result.error_samples.append(f"{data.get('class_name', '?')}: {message}")
        callback_args = data.get("callback_args") or data.get("response", {}).get("callback_args")
        index = (callback_args or {}).get("i")
        if isinstance(index, int) and 0 <= index < len(enqueued) and index not in seen:
            seen.add(index)
            result.latencies_ms.append((at - enqueued[index]) * 1000)
    result.unique = len(seen)
    result.latencies_ms.sort()
    return result


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence (NaN when empty)."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def wait_for_callbacks(
    client: redis.Redis, workers: Sequence[WorkerProcess], total: int, timeout: float
) -> int:
    """Poll LLEN of the callback queue until ``total``, a stall, a timeout or the worker dies."""
    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    while True:
        done = int(client.llen(keys.queue(CALLBACK_QUEUE)))
        now = time.monotonic()
        if done >= total:
            return done
        if done != last:
            last, last_change = done, now
        for worker in workers:
            if not worker.alive():
                print(f"    worker exited early (exit {worker.exit_code}) after {done} callbacks")
                return done
        if now - last_change > STALL_SECONDS:
            print(f"    no progress for {STALL_SECONDS:.0f} s at {done}/{total} callbacks")
            return done
        if now > deadline:
            print(f"    timeout after {timeout:.0f} s at {done}/{total} callbacks")
            return done
        time.sleep(POLL_SECONDS)


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: Literal["backlog", "paced", "fanout"]
    path: str
    server_ms: float
    tls: bool
    jobs: int
    max_connections: int

    def describe(self, protocol: str) -> str:
        transport = f"HTTP/2 TLS ({protocol})" if self.tls else f"HTTP/1.1 plain ({protocol})"
        return f"{self.name}: {self.path} over {transport}, max_connections {self.max_connections}"


@dataclass
class Measurement:
    scenario: Scenario
    jobs: int = 0
    callbacks: Callbacks = field(default_factory=Callbacks)
    seconds: float = math.nan
    first_seconds: float = math.nan
    cpu_seconds: float = math.nan
    user_seconds: float = math.nan
    sys_seconds: float = math.nan
    threads: dict[str, float] = field(default_factory=dict)
    cpu_total: float = math.nan
    context_switches: int = 0
    rss_mb: float = math.nan
    refusals: int = 0
    retries: int = 0
    dead: int = 0
    left_in_queue: int = 0
    nginx_cpu: float = 0.0
    redis_cpu: float = 0.0
    shards: int | None = None
    push_seconds: float = 0.0
    processes: int = 1
    failure: str | None = None

    @property
    def jobs_per_second(self) -> float:
        return self.callbacks.unique / self.seconds if self.seconds > 0 else math.nan

    @property
    def cpu_ms_per_job(self) -> float:
        done = max(1, self.callbacks.unique)
        return self.cpu_seconds / done * 1000


@dataclass(frozen=True)
class Environment:
    redis: RedisServer
    nginx: NginxServer
    protocol_h2: Protocol
    shutdown_timeout: float
    paced_rate: float
    processes: int = 1
    profile: Path | None = None


def run_scenario(env: Environment, scenario: Scenario) -> Measurement:
    """Measure one scenario in fresh worker process(es); never raises BenchError."""
    result = Measurement(scenario, jobs=scenario.jobs, processes=env.processes)
    client = redis.Redis.from_url(env.redis.url)
    client.flushdb()
    url = env.nginx.url(scenario.path, tls=scenario.tls)
    protocol: Protocol = env.protocol_h2 if scenario.tls else "http1"
    config = {
        "redis_url": env.redis.url,
        "max_connections": scenario.max_connections,
        "concurrency": scenario.max_connections,
        "protocol": protocol,
        "ca_bundle": str(env.nginx.cert_path),
        "shutdown_timeout": env.shutdown_timeout,
    }
    enqueued: list[float] = []
    if scenario.kind != "paced":
        enqueued, result.push_seconds = prefill(client, url, scenario.jobs)
    workers: list[WorkerProcess] = []
    profiler: subprocess.Popen[bytes] | None = None
    try:
        # Started together, so with --processes N they share the backlog from the start.
        workers = [WorkerProcess(config) for _ in range(env.processes)]
        readies = [worker.wait_ready() for worker in workers]
        ready_at = min(float(ready["t"]) for ready in readies)
        result.shards = readies[0].get("shards")
        if env.profile is not None:
            profiler = start_profiler(env.profile, scenario.name, workers[0].process.pid)
        nginx_before = process_cpu(env.nginx.pid)
        redis_before = process_cpu(env.redis.pid)
        if scenario.kind == "paced":
            enqueued, result.push_seconds = push_paced(client, url, scenario.jobs, env.paced_rate)
        timeout = max(120.0, scenario.jobs / 100)
        wait_for_callbacks(client, workers, scenario.jobs, timeout)
        result.nginx_cpu = process_cpu(env.nginx.pid) - nginx_before
        result.redis_cpu = process_cpu(env.redis.pid) - redis_before
        stop_profiler(profiler)
        if len(workers) == 1:
            result.threads = thread_cpu(workers[0].process.pid)
        result.user_seconds = result.sys_seconds = result.cpu_total = result.rss_mb = 0.0
        for worker, ready in zip(workers, readies, strict=True):
            worker.stop()
            if worker.exit_code not in (0, None) and result.failure is None:
                result.failure = f"worker exit code {worker.exit_code}"
            usage = worker.rusage
            assert usage is not None
            result.cpu_total += usage.ru_utime + usage.ru_stime
            result.user_seconds += usage.ru_utime - float(ready["user"])
            result.sys_seconds += usage.ru_stime - float(ready["sys"])
            result.context_switches += usage.ru_nvcsw + usage.ru_nivcsw - int(ready["csw"])
            result.rss_mb = max(result.rss_mb, usage.ru_maxrss / 1024)
        result.cpu_seconds = result.user_seconds + result.sys_seconds
        result.callbacks = read_callbacks(client, enqueued)
        if result.callbacks.last_at:
            result.seconds = result.callbacks.last_at - ready_at
            result.first_seconds = result.callbacks.first_at - ready_at
        totals = client.hget(keys.TOTALS, "max_capacity_exceeded")
        result.refusals = int(totals or 0)
        result.retries = int(client.zcard(keys.RETRY))
        result.dead = int(client.zcard(keys.DEAD))
        result.left_in_queue = int(client.llen(keys.queue(QUEUE)))
        if result.callbacks.unique < scenario.jobs and result.failure is None:
            result.failure = f"only {result.callbacks.unique}/{scenario.jobs} callbacks"
    except BenchError as exc:
        result.failure = str(exc)
    finally:
        stop_profiler(profiler)
        for worker in workers:
            worker.stop(timeout=5)
        client.close()
    return result


# --- reporting ---


def fmt(value: float, digits: int = 0) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


def report(m: Measurement, protocol: str) -> None:
    s = m.scenario
    c = m.callbacks
    print(
        s.describe(protocol)
        + (f", {m.shards} shards" if m.shards else "")
        + (f", {m.processes} worker processes" if m.processes > 1 else "")
    )
    if s.kind == "paced":
        added = [latency - s.server_ms for latency in c.latencies_ms]
        print(
            f"  paced          {s.jobs:,} jobs pushed one by one at "
            f"{s.jobs / m.push_seconds:,.0f}/s (no backlog)"
        )
        print(
            f"  added latency  p50 {fmt(percentile(added, 0.5), 2)} ms   "
            f"p99 {fmt(percentile(added, 0.99), 2)} ms   "
            f"max {fmt(added[-1] if added else math.nan, 2)} ms"
            f"   (callback enqueued_at - request enqueued_at - {s.server_ms:g} ms server delay)"
        )
    elif s.kind == "fanout":
        print(
            f"  wall time      {fmt(m.seconds, 2)} s for {c.unique:,} concurrent {s.path} requests "
            f"(worker ready -> last callback; first callback after {fmt(m.first_seconds, 2)} s)"
        )
    else:
        print(
            f"  throughput     {fmt(m.jobs_per_second)} jobs/s   ({c.unique:,} jobs, "
            f"{fmt(m.seconds, 2)} s from worker ready to last callback; "
            f"prefill {m.push_seconds:.1f} s)"
        )
    switches = m.context_switches / max(1, c.unique)
    print(
        f"  worker CPU     {fmt(m.cpu_ms_per_job, 3)} ms/job   "
        f"(ready -> exit: user {fmt(m.user_seconds, 2)} s + sys {fmt(m.sys_seconds, 2)} s; "
        f"whole process {fmt(m.cpu_total, 2)} s; {switches:.1f} context switches/job)"
    )
    if m.threads:
        ordered = sorted(m.threads.items(), key=lambda item: -item[1])
        threads = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in ordered[:4])
        print(f"  worker threads {threads} (whole life, busiest {min(4, len(ordered))})")
    print(f"  peak RSS       {fmt(m.rss_mb)} MB")
    print(
        f"  refusals       {m.refusals} max_capacity_exceeded, {m.retries} in retry, "
        f"{m.dead} in dead, {m.left_in_queue} left in queue"
    )
    samples = f"   e.g. {'; '.join(c.error_samples)}" if c.error_samples else ""
    duplicates = c.count - c.unique
    print(
        f"  results        {c.errors:,} error callbacks of {c.count:,}"
        + (f", {duplicates} duplicates/unknown" if duplicates else "")
        + samples
    )
    if s.kind != "paced":
        print(
            f"  end to end     p50 {fmt(percentile(c.latencies_ms, 0.5))} ms   "
            f"p99 {fmt(percentile(c.latencies_ms, 0.99))} ms   (request enqueued_at -> callback; "
            f"includes waiting in the backlog)"
        )
    print(f"  server CPU     nginx {m.nginx_cpu:.2f} s, redis {m.redis_cpu:.2f} s (same 2 cores)")
    if m.failure:
        print(f"  INCOMPLETE     {m.failure}")
    print(flush=True)


def summary(results: Sequence[Measurement], protocols: dict[str, str]) -> None:
    print("Summary (targets for one process, 2 cores: >= 2,000 jobs/s on fast-h1 with 0 refusals;")
    print("         5,000 x 2 s requests in < 4 s wall with < 300 MB RSS)")
    header = (
        f"{'scenario':<16}{'jobs':>7}{'jobs/s':>9}{'wall s':>8}{'CPU ms/job':>11}{'RSS MB':>8}"
        f"{'refused':>8}{'errors':>7}{'p50 ms':>9}{'p99 ms':>9}  latency"
    )
    print(header)
    print("-" * len(header))
    for m in results:
        s, c = m.scenario, m.callbacks
        if s.kind == "paced":
            latencies = [latency - s.server_ms for latency in c.latencies_ms]
            what = "added"
        else:
            latencies = c.latencies_ms
            what = "end to end (backlog)"
        rate = fmt(m.jobs_per_second) if s.kind == "backlog" else ""
        wall = fmt(m.seconds, 2) if s.kind != "paced" else ""
        print(
            f"{s.name:<16}{c.unique:>7,}{rate:>9}{wall:>8}"
            f"{fmt(m.cpu_ms_per_job, 3):>11}{fmt(m.rss_mb):>8}"
            f"{m.refusals + m.retries:>8}{c.errors:>7}{fmt(percentile(latencies, 0.5), 1):>9}"
            f"{fmt(percentile(latencies, 0.99), 1):>9}  {what}"
            + (f"  INCOMPLETE: {m.failure}" if m.failure else "")
        )
    print("(refused = max_capacity_exceeded + jobs in retry; protocols:", end=" ")
    print(", ".join(f"{name} {protocol}" for name, protocol in protocols.items()) + ")")


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    jobs, conns = args.jobs, args.max_connections
    paced, fanout = args.paced_jobs, args.fanout_jobs
    catalogue = [
        Scenario("fast-h1", "backlog", "/fast", 0, False, jobs, conns),
        Scenario("fast-h1-paced", "paced", "/fast", 0, False, paced, conns),
        Scenario("sleep50-h1", "backlog", "/sleep50", 50, False, jobs, conns),
        Scenario("sleep50-h1-paced", "paced", "/sleep50", 50, False, paced, conns),
        Scenario("fast-h2", "backlog", "/fast", 0, True, jobs, conns),
        Scenario("fast-h2-paced", "paced", "/fast", 0, True, paced, conns),
        Scenario("sleep50-h2", "backlog", "/sleep50", 50, True, jobs, conns),
        Scenario("sleep50-h2-paced", "paced", "/sleep50", 50, True, paced, conns),
        Scenario("fanout-h1", "fanout", "/sleep2000", 2000, False, fanout, fanout),
        Scenario("fanout-h2", "fanout", "/sleep2000", 2000, True, fanout, fanout),
    ]
    by_name = {scenario.name: scenario for scenario in catalogue}
    if args.scenarios == "all":
        chosen = catalogue
    else:
        names = [name.strip() for name in args.scenarios.split(",") if name.strip()]
        unknown = [name for name in names if name not in by_name]
        if unknown:
            raise SystemExit(
                f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(by_name)}"
            )
        chosen = [by_name[name] for name in names]
    return [scenario for scenario in chosen if scenario.jobs > 0]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Scenarios: fast-h1, fast-h1-paced, sleep50-h1, sleep50-h1-paced, fast-h2, "
        "fast-h2-paced, sleep50-h2, sleep50-h2-paced, fanout-h1, fanout-h2 (default: all).",
    )
    parser.add_argument("--scenarios", default="all", help="comma-separated names, or 'all'")
    parser.add_argument("--jobs", type=int, default=20_000, help="backlog size (default 20000)")
    parser.add_argument(
        "--max-connections",
        type=int,
        default=256,
        help="max_connections = processor concurrency for backlog/paced runs (default 256)",
    )
    parser.add_argument("--paced-jobs", type=int, default=2_000, help="paced jobs (default 2000)")
    parser.add_argument("--paced-rate", type=float, default=300.0, help="jobs/s (default 300)")
    parser.add_argument(
        "--fanout-jobs", type=int, default=5_000, help="concurrent 2 s requests (default 5000)"
    )
    parser.add_argument(
        "--h2-protocol",
        choices=["http2", "auto"],
        default="http2",
        help="HttpSettings.protocol for the TLS runs (auto: ALPN, HTTP/1.1-sized shards)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="worker processes sharing each scenario (default 1; CPU summed, RSS = max)",
    )
    parser.add_argument("--shutdown-timeout", type=float, default=30.0)
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="attach py-spy (--gil, raw) to each worker; one DIR/<scenario>.txt per scenario",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def print_environment(env: Environment) -> None:
    versions = subprocess.run(
        [shutil.which("nginx") or "nginx", "-v"], capture_output=True, text=True, check=False
    ).stderr.strip()
    somaxconn = Path("/proc/sys/net/core/somaxconn").read_text().strip()
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    redis_info = redis.Redis.from_url(env.redis.url).info("server")
    print(
        f"bench_pipeline: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{versions.replace('nginx version: ', '')}, redis {redis_info.get('redis_version')}, "
        f"trio {trio.__version__}, somaxconn {somaxconn}, nofile {nofile[0]}/{nofile[1]}"
    )
    print(
        f"nginx http://127.0.0.1:{env.nginx.http_port} (HTTP/1.1), "
        f"https://127.0.0.1:{env.nginx.https_port} (TLS, h2 via ALPN); redis {env.redis.url}"
        + (" (REDIS_URL: flushed before each scenario)" if env.redis.pid is None else "")
    )
    print()


def _exit_on_signal(number: int, frame: object) -> None:
    raise SystemExit(128 + number)


def main(argv: Sequence[str]) -> None:
    args = parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return
    chosen = scenarios(args)
    # A TERM (or a hang-up) unwinds like Ctrl-C, so nginx, redis and the workers are stopped.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_pipe.")))
        try:
            env = Environment(
                redis=stack.enter_context(redis_server(directory)),
                nginx=stack.enter_context(nginx_server(directory)),
                protocol_h2=args.h2_protocol,
                shutdown_timeout=args.shutdown_timeout,
                paced_rate=args.paced_rate,
                processes=max(1, args.processes),
                profile=args.profile,
            )
        except BenchError as exc:
            raise SystemExit(f"bench_pipeline: {exc}") from exc
        print_environment(env)
        results: list[Measurement] = []
        protocols: dict[str, str] = {}
        for scenario in chosen:
            protocol = env.protocol_h2 if scenario.tls else "http1"
            protocols[scenario.name] = protocol
            measurement = run_scenario(env, scenario)
            results.append(measurement)
            report(measurement, protocol)
        summary(results, protocols)
        errors = tail(env.nginx.error_log, 3)
        if errors and errors != "(no log)":
            print(f"nginx error.log (last lines): {errors}")


if __name__ == "__main__":
    main(sys.argv[1:])
