"""The measuring kit of scripts/bench_pipeline.py: private servers, process trees, Redis counters.

Nothing here knows about the worker's internals: the worker (ours or the gem) is a process
tree seen through ``/proc`` and ``wait4``, and Redis is seen through ``INFO``. Everything
started here is stopped by the context manager that started it.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import math
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tests.support.programs import free_port, stop_process
from tests.support.redis import running_redis

ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


class BenchError(Exception):
    """A scenario (or the whole benchmark) could not be measured; the message says why."""


# --- open files ---


def raise_nofile(wanted: int) -> tuple[int, int, str]:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit (children inherit it).

    When ``wanted`` is above the hard limit, the hard limit is raised too where that is
    allowed (root, up to ``fs.nr_open``). Returns (soft, hard, note).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    note = ""
    if hard != resource.RLIM_INFINITY and hard < wanted:
        ceiling = wanted
        with suppress(OSError, ValueError):
            ceiling = min(wanted, int(Path("/proc/sys/fs/nr_open").read_text()))
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, ceiling))
            note = f"hard limit raised from {hard} to {ceiling} (privileged)"
            soft, hard = ceiling, ceiling
        except (OSError, ValueError):
            note = (
                f"the hard limit {hard} is below the {wanted} wanted and cannot be raised here "
                "(needs CAP_SYS_RESOURCE)"
            )
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft, hard, note


# --- redis ---


@dataclass(frozen=True)
class RedisServer:
    host: str
    port: int
    db: int
    pid: int | None

    def url(self, db: int | None = None) -> str:
        return f"redis://{self.host}:{self.port}/{self.db if db is None else db}"


@contextmanager
def redis_server(directory: Path, url: str | None) -> Iterator[RedisServer]:
    """A private redis-server (tests/support/redis.py) on a free port, or ``url`` (whose db
    and db + 1 are then flushed by the benchmark)."""
    if url:
        parsed = redis.Redis.from_url(url).connection_pool.connection_kwargs
        yield RedisServer(
            str(parsed.get("host", "127.0.0.1")),
            int(parsed.get("port", 6379)),
            int(parsed.get("db", 0)),
            None,
        )
        return
    data = directory / "redis"
    data.mkdir()
    binary = shutil.which("redis-server") or "redis-server"
    with running_redis(data, binary=binary) as server:
        yield RedisServer("127.0.0.1", server.port, 0, server.pid)


class CountingRedis:
    """A redis-py client that counts its own round trips and commands, so they can be taken
    out of the server's ``INFO stats`` deltas."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.trips = 0
        self.commands = 0

    def call(self, *args: Any) -> Any:
        self.trips += 1
        self.commands += 1
        return self.client.execute_command(*args)  # type: ignore[no-untyped-call]

    def pipeline(self, *commands: tuple[Any, ...]) -> list[Any]:
        """The commands in one round trip (no MULTI), as Sidekiq's client pushes a job."""
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)  # type: ignore[no-untyped-call]
        self.trips += 1
        self.commands += len(commands)
        return pipe.execute()

    def stats(self) -> tuple[int, int]:
        """(total_reads_processed, total_commands_processed) of the server. An INFO's read
        is counted before it runs and the command after, so between two of them the server's
        deltas hold exactly one INFO read and one INFO command besides ``trips``/``commands``."""
        info = self.client.info("stats")
        return int(info["total_reads_processed"]), int(info["total_commands_processed"])

    def close(self) -> None:
        self.client.close()


# --- nginx with the echo module ---


def write_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed P-256 certificate for 127.0.0.1/localhost; also the clients' CA bundle."""
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


# The body names the protocol nginx served ($server_protocol), so the benchmark can tell from
# the callbacks which protocol each side really spoke (ALPN outcome included).
BODY = '{"ok":true,"protocol":"$server_protocol"}'

NGINX_CONF = """\
load_module @ECHO_MODULE@;
daemon off;
master_process on;
worker_processes @WORKERS@;
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
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    http2_max_concurrent_streams 128;
    server {
@LISTEN@
        listen 127.0.0.1:@HTTPS_PORT@ ssl http2 backlog=65535;
        ssl_certificate @CERT@;
        ssl_certificate_key @KEY@;
        ssl_session_cache shared:bench:10m;
        location = /instant { echo -n '@BODY@'; }
        location = /delay50 { echo_sleep 0.05; echo -n '@BODY@'; }
        location = /delay2000 { echo_sleep 2; echo -n '@BODY@'; }
    }
}
"""

DELAYS_MS = {"/instant": 0.0, "/delay50": 50.0, "/delay2000": 2000.0}


@dataclass(frozen=True)
class NginxServer:
    http_ports: tuple[int, ...]
    https_port: int
    cert_path: Path
    pid: int
    error_log: Path
    connections: int  # per worker
    workers: int

    def urls(self, path: str, *, tls: bool, spread: int = 1) -> list[str]:
        """The URL(s) of ``path``; ``spread`` > 1: that many plain ports, one URL each (more
        than ~28,000 connections to one address and port exhaust the ephemeral ports)."""
        if tls:
            return [f"https://127.0.0.1:{self.https_port}{path}"]
        return [f"http://127.0.0.1:{port}{path}" for port in self.http_ports[: max(1, spread)]]


@contextmanager
def nginx_server(
    directory: Path, *, workers: int, nofile: int, ports: int
) -> Iterator[NginxServer]:
    """A private nginx with the echo module: ``ports`` plain HTTP/1.1 ports and one TLS port
    offering HTTP/2 and HTTP/1.1 by ALPN; endpoints /instant, /delay50 and /delay2000."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists() or not Path(ECHO_MODULE).exists():
        raise BenchError(
            "nginx with the echo module is needed: apt-get install nginx libnginx-mod-http-echo "
            "(scripts/bench_pipeline installs them)"
        )
    home = directory / "nginx"
    home.mkdir()
    cert_path, key_path = write_certificate(home)
    http_ports = tuple(free_port() for _ in range(max(1, ports)))
    https_port = free_port()
    connections = max(1024, nofile - 100)
    # several workers: reuseport spreads the connections over them (each has `connections`)
    options = "backlog=65535 reuseport" if workers > 1 else "backlog=65535"
    listen = "\n".join(f"        listen 127.0.0.1:{port} {options};" for port in http_ports)
    replacements = {
        "@ECHO_MODULE@": ECHO_MODULE,
        "@WORKERS@": str(workers),
        "@NOFILE@": str(nofile),
        "@CONNECTIONS@": str(connections),
        "@DIR@": str(home),
        "@LISTEN@": listen,
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
        for port in (*http_ports, https_port):
            while True:
                if process.poll() is not None:
                    raise BenchError(f"nginx exited: {tail(error_log)}")
                with socket.socket() as sock:
                    if sock.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if time.monotonic() > deadline:
                    raise BenchError(f"nginx did not listen on {port}: {tail(error_log)}")
                time.sleep(0.02)
        yield NginxServer(
            http_ports, https_port, cert_path, process.pid, error_log, connections, workers
        )
    finally:
        stop_process(process)


def tail(path: Path, lines: int = 5) -> str:
    """The last lines of a log file, joined with " | " ("(no log)" when unreadable)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(line.strip() for line in text[-lines:] if line.strip()) or "(empty log)"


# --- process trees ---


def descendants(pid: int) -> list[int]:
    """``pid`` and every live descendant (via /proc/<pid>/task/<tid>/children)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        if current in found or not Path(f"/proc/{current}").exists():
            continue
        found.append(current)
        with suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                with suppress(OSError, ValueError):
                    pending += [int(child) for child in (task / "children").read_text().split()]
    return found


@dataclass(frozen=True)
class ProcSample:
    """One process at one moment: CPU (user, sys seconds, all threads, dead ones included),
    context switches per live thread, peak and current RSS, its command name."""

    pid: int
    name: str
    user: float
    sys: float
    threads: dict[int, int]  # tid: voluntary + involuntary context switches so far
    hwm_mb: float
    rss_mb: float

    @property
    def cpu(self) -> float:
        return self.user + self.sys

    def switches_since(self, earlier: ProcSample | None) -> int:
        """Context switches since ``earlier`` (every one when None) of the threads alive now;
        a thread that ended in between takes its switches with it."""
        before = earlier.threads if earlier is not None else {}
        return sum(count - before.get(tid, 0) for tid, count in self.threads.items())


def sample_process(pid: int) -> ProcSample | None:
    """The process's counters now, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    user, system = int(fields[11]) / TICKS, int(fields[12]) / TICKS
    values: dict[str, int] = {}
    for line in status.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            values[key] = int(rest.split()[0])
    threads: dict[int, int] = {}
    with suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with suppress(OSError, ValueError):
                count = 0
                for line in (task / "status").read_text().splitlines():
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        count += int(line.split(":")[1])
                threads[int(task.name)] = count
    return ProcSample(
        pid,
        name,
        user,
        system,
        threads,
        values.get("VmHWM", 0) / 1024,
        values.get("VmRSS", 0) / 1024,
    )


def sample_tree(roots: Sequence[int]) -> dict[int, ProcSample]:
    """Every live process of the trees under ``roots``, by pid."""
    samples: dict[int, ProcSample] = {}
    for root in roots:
        for pid in descendants(root):
            sample = sample_process(pid)
            if sample is not None:
                samples[pid] = sample
    return samples


def process_cpu(pid: int | None) -> float:
    """CPU seconds (user+sys) of a process tree (nginx: master + worker), 0 when unknown."""
    if pid is None:
        return 0.0
    return sum(sample.cpu for sample in sample_tree([pid]).values())


# --- child processes reaped with their rusage ---


class Child:
    """A process started for one run, reaped with ``os.wait4`` so its rusage (its own plus
    every descendant it waited for) is kept; output goes to ``log``."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], log: Path, label: str) -> None:
        self.label = label
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                list(argv),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C at the terminal reaches the harness only
            )
        self.pid = self.process.pid
        self.exit_code: int | None = None
        self.rusage: resource.struct_rusage | None = None

    def alive(self) -> bool:
        if self.exit_code is not None:
            return False
        pid, status, usage = os.wait4(self.pid, os.WNOHANG)
        if pid == 0:
            return True
        self._reaped(status, usage)
        return False

    def signal(self, number: int) -> None:
        if self.alive():
            with suppress(ProcessLookupError):
                os.kill(self.pid, number)

    def wait(self, timeout: float) -> bool:
        """True when it ended within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def kill_tree(self) -> None:
        """SIGKILL the process and whatever is left of its tree; reap it."""
        for pid in reversed(descendants(self.pid)):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.exit_code is None:
            _, status, usage = os.wait4(self.pid, 0)
            self._reaped(status, usage)

    def _reaped(self, status: int, usage: resource.struct_rusage) -> None:
        self.exit_code = os.waitstatus_to_exitcode(status)
        self.rusage = usage
        self.process.returncode = self.exit_code  # so Popen never waits for it again


# --- callbacks ---


@dataclass
class Callbacks:
    """What the CallbackWorker jobs in the callback queue say."""

    count: int = 0
    unique: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    protocols: dict[str, int] = field(default_factory=dict)
    times: list[float] = field(default_factory=list)  # every callback's enqueued_at, ascending
    first_at: float = math.inf
    last_at: float = 0.0

    def active_seconds(self, since: float, gap: float = 1.0) -> float:
        """Seconds from ``since`` to the last callback, leaving out every pause longer than
        ``gap`` between consecutive callbacks (e.g. the gem's jobs waiting out Sidekiq's retry
        delay after a capacity refusal)."""
        total, previous = 0.0, since
        for at in self.times:
            step = at - previous
            if 0 < step <= gap:
                total += step
            previous = max(previous, at)
        return total


def read_callbacks(raws: Sequence[bytes], enqueued: dict[int, float] | None) -> Callbacks:
    """Parse every callback job: error results, duplicates, the protocol nginx served, and per
    job (``enqueued``: request enqueued_at by callback_args "i") request -> callback latency."""
    result = Callbacks()
    seen: set[int] = set()
    for raw in raws:
        result.count += 1
        try:
            job = json.loads(raw)
            data, kind = job["args"][0], job["args"][1]
            at = float(job["enqueued_at"])
        except (ValueError, KeyError, IndexError, TypeError):
            continue
        at = at / 1000 if at > 1e11 else at  # Sidekiq 8 writes milliseconds
        result.last_at = max(result.last_at, at)
        result.first_at = min(result.first_at, at)
        result.times.append(at)
        if not isinstance(data, dict):
            continue
        nested = data.get("response")
        response: dict[str, Any] = nested if isinstance(nested, dict) else data
        if kind == "error" and len(result.error_samples) < 3:
            # RequestError: class_name + message; redirect: error_class; HttpError: response
            name = data.get("class_name") or data.get("error_class") or "HttpError"
            detail = data.get("message") or response.get("status")
            result.error_samples.append(f"{name}: {detail}")
        if kind == "error":
            result.errors += 1
        for protocol in ("HTTP/2.0", "HTTP/1.1", "HTTP/1.0"):
            if protocol.encode() in raw:
                result.protocols[protocol] = result.protocols.get(protocol, 0) + 1
                break
        callback_args = data.get("callback_args") or response.get("callback_args") or {}
        index = callback_args.get("i") if isinstance(callback_args, dict) else None
        if isinstance(index, int) and index not in seen:
            seen.add(index)
            if enqueued is not None and index in enqueued:
                result.latencies_ms.append((at - enqueued[index]) * 1000)
    result.unique = len(seen)
    result.latencies_ms.sort()
    result.times.sort()
    return result


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence (NaN when empty)."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    """Median of the finite values (NaN when there are none)."""
    finite = sorted(value for value in values if not math.isnan(value))
    if not finite:
        return math.nan
    middle = len(finite) // 2
    if len(finite) % 2:
        return finite[middle]
    return (finite[middle - 1] + finite[middle]) / 2


def fmt(value: float, digits: int = 0) -> str:
    """``value`` with thousands separators, "n/a" for NaN."""
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"
