"""End-to-end interop harness: a real Ruby Sidekiq + ``patient-sidekiq run`` on one Redis.

A scenario module builds one :class:`E2E` stack per module (``e2e_stack``): a private
redis-server, the hypercorn test app (``tests/support/http.py``) in a background thread, a
Ruby Sidekiq server working the Ruby callback queue, and a ``python -m patient_sidekiq run``
worker. Requests are enqueued by Ruby or by Python, and both sides' callbacks RPUSH one
JSON record per result onto ``interop:records``; tests wait for records by request id
(bounded poll).

The Ruby side (:class:`RubySide`, chosen once per session by :func:`ruby_side`):

* REAL GEM (the default whenever it is built: ``tests.support.oracle.oracle_root()``): patient_http
  1.3.0 + patient_http-sidekiq 1.0.1 in Sidekiq 7.3.10 from ``.oracle/``. The callback
  server is Sidekiq 7.3.10 booting ``ruby_interop/gem_boot.rb`` (the oracle's boot file, the
  gem's own CallbackWorker calling ``Interop::Recorder``); enqueueing is the gem's
  ``PatientHttp::Sidekiq.execute`` (``ruby_interop/gem_enqueue.rb``); the Web-tab numbers
  are read off the gem's rendered Web tab and the sweep is the gem's monitor-thread pass
  (``ruby_interop/gem_task_monitor.rb``); :meth:`E2E.start_ruby_processor` runs the gem's
  async processor (RequestWorker jobs) in a Sidekiq 7.3.10 server.
* STAND-IN (only when the real gem is not built, e.g. a clone without ``../shared``):
  Debian's Sidekiq 6.4 booting ``ruby_interop/sidekiq_boot.rb`` with the hand-written
  stand-in (``patient_http_standin.rb``, ``enqueue.rb``, ``task_monitor.rb``). The suite says
  so in its header, its summary and a warning. Under ``CI`` a missing real gem fails the
  tests instead. Scenarios that need the gem's processor skip on the stand-in.

``INTEROP_RUBY_SIDE=real|standin`` forces one side (``real`` without the gem fails).

Imported by the worker too (``-r tests.interop.e2e_harness``): that registers
``Interop::PyRecorder``, the Python callback of the Ruby-to-Python scenarios.

Queues: RequestWorker jobs on ``patient_http``; Ruby callbacks on ``interop_callbacks``
(worked by the Ruby server); Python callbacks on ``patient_http_callbacks`` (worked by the
Python process). Redis keys of the harness: ``interop:records``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import redis

from patient_sidekiq import keys
from patient_sidekiq.registry.callbacks import callback

ROOT = Path(__file__).resolve().parents[2]
RUBY_DIR = ROOT / "ruby_interop"
BOOT_FILE = RUBY_DIR / "sidekiq_boot.rb"
ENQUEUE_SCRIPT = RUBY_DIR / "enqueue.rb"
MONITOR_SCRIPT = RUBY_DIR / "task_monitor.rb"
GEM_BOOT_FILE = RUBY_DIR / "gem_boot.rb"
GEM_ENQUEUE_SCRIPT = RUBY_DIR / "gem_enqueue.rb"
GEM_MONITOR_SCRIPT = RUBY_DIR / "gem_task_monitor.rb"
SIDE_ENV = "INTEROP_RUBY_SIDE"
RECORDS = "interop:records"
REQUEST_QUEUE = "patient_http"
RUBY_CALLBACK_QUEUE = "interop_callbacks"
PYTHON_CALLBACK_QUEUE = "patient_http_callbacks"
REDIS_URL_ENV = "INTEROP_REDIS_URL"
READY_TIMEOUT = 30.0
RECORD_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
NOISE = ("Passing the timeout as a positional argument", "  redis.brpop(")


# --- the Python callback (loaded into the worker with -r tests.interop.e2e_harness) ------


def _response_fields(response: Any) -> dict[str, Any]:
    content = response.content
    text = response.text
    return {
        "status": response.status,
        "headers": dict(response.headers.items()),
        "body": text,
        "body_base64": None if content is None else _b64(content),
        "json": response.json() if response.is_json else None,
        "success": response.success,
        "callback_args": dict(response.callback_args),
        "request_id": response.request_id,
        "url": response.url,
        "http_method": response.http_method,
        "redirects": list(response.redirects),
    }


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def _record(entry: dict[str, Any]) -> None:
    client = redis.Redis.from_url(os.environ[REDIS_URL_ENV])
    try:
        client.rpush(RECORDS, json.dumps({**entry, "runtime": "python"}))
    finally:
        client.close()


@callback("Interop::PyRecorder")
class PyRecorder:
    """Records each result like the Ruby ``Interop::Recorder`` does, from Python."""

    def on_complete(self, response: Any) -> None:
        """Record a response."""
        entry = {"callback": "on_complete", "class": type(response).__name__}
        _record({**entry, **_response_fields(response)})

    def on_error(self, error: Any) -> None:
        """Record an error (and the response of an HttpError)."""
        response = getattr(error, "response", None)
        _record(
            {
                "callback": "on_error",
                "class": getattr(error, "ruby_class", None) or getattr(error, "class_name", None),
                "error_type": error.error_type,
                "message": error.message,
                "callback_args": dict(error.callback_args),
                "request_id": error.request_id,
                "url": error.url,
                "http_method": error.http_method,
                "response": None if response is None else _response_fields(response),
            }
        )


# --- which Ruby side: the real gem, or the stand-in when the gem is not built -------------


@dataclass(frozen=True)
class RubySide:
    """The Ruby programs the suite runs: the real gem (``oracle`` set) or the stand-in."""

    oracle: Path | None
    # Why this side was chosen (for the banner).
    reason: str

    @property
    def real(self) -> bool:
        """True for the real gem."""
        return self.oracle is not None

    @property
    def name(self) -> str:
        """``REAL GEM`` or ``STAND-IN``."""
        return "REAL GEM" if self.real else "STAND-IN"

    def banner(self) -> str:
        """One line saying which Ruby side the end-to-end interop tests run against."""
        if self.oracle is not None:
            return (
                "interop: Ruby side = REAL GEM (patient_http-sidekiq 1.0.1 in Sidekiq 7.3.10, "
                f"{self.oracle})"
            )
        return (
            f"interop: Ruby side = STAND-IN ({self.reason}; ruby_interop/ on Debian's "
            "Sidekiq 6.4, not the gem)"
        )

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of a Ruby process of this side (the gem's load path first)."""
        base = {**os.environ, **(extra or {})}
        base.pop("REDIS_PROVIDER", None)  # would win over REDIS_URL in Sidekiq
        if self.oracle is None:
            return base
        from tests.support.oracle import oracle_env

        return oracle_env(self.oracle, base)

    def sidekiq_argv(self, queues: Sequence[str], concurrency: int) -> list[str]:
        """A Sidekiq server command working ``queues`` with this side's boot file."""
        queue_args = [arg for queue in queues for arg in ("-q", queue)]
        if self.oracle is None:
            return [_which("sidekiq"), "-r", str(BOOT_FILE), *queue_args, "-c", str(concurrency)]
        sidekiq = self.oracle / "vendor" / "sidekiq-7.3.10" / "bin" / "sidekiq"
        return [
            _which("ruby"), str(sidekiq), "-r", str(GEM_BOOT_FILE),
            *queue_args, "-c", str(concurrency), "-t", "5",
        ]  # fmt: skip

    @property
    def enqueue_script(self) -> Path:
        """The Ruby enqueuer (same JSON in and out on both sides)."""
        return GEM_ENQUEUE_SCRIPT if self.real else ENQUEUE_SCRIPT

    def callback_env(self, encryption_keys: Sequence[str], payload_store: bool) -> dict[str, str]:
        """Settings of the Ruby callback server: decryption keys, the Redis payload store."""
        if self.oracle is None:
            return {"INTEROP_ENCRYPTION_KEYS": ",".join(encryption_keys)}
        env = {"ORACLE_PROCESSOR": "0", "ORACLE_CALLBACK_QUEUE": RUBY_CALLBACK_QUEUE}
        if encryption_keys:
            env["ORACLE_ENCRYPTION_KEY"] = json.dumps(list(encryption_keys))
        if payload_store:
            env["ORACLE_PAYLOAD_STORE"] = "redis"
            env["ORACLE_PAYLOAD_STORE_NAME"] = "redis"
        return env


_USED: list[RubySide] = []


@functools.cache
def ruby_side() -> RubySide:
    """The session's Ruby side: the real gem when it is built, else the stand-in.

    ``INTEROP_RUBY_SIDE=real`` insists on the gem, ``standin`` forces the stand-in. Without
    the gem under ``CI`` (and no explicit ``standin``) the caller fails: see
    :func:`require_ruby_side`.
    """
    from tests.support.oracle import oracle_root

    wanted = os.environ.get(SIDE_ENV, "").strip().lower()
    if wanted not in ("", "real", "standin"):
        raise ValueError(f"{SIDE_ENV} must be 'real' or 'standin', not {wanted!r}")
    if wanted == "standin":
        return RubySide(None, f"{SIDE_ENV}=standin")
    root = oracle_root()
    if root is not None:
        return RubySide(root, "built")
    return RubySide(None, "real gem not built")


def require_ruby_side() -> RubySide:
    """The session's Ruby side, for a test about to use it.

    Fails when the real gem is wanted but missing: ``INTEROP_RUBY_SIDE=real``, or under
    ``CI`` (a missing gem in CI is a failure, never a silent fallback). Otherwise a
    stand-in run is announced with a warning.
    """
    import warnings

    import pytest

    side = ruby_side()
    wanted = os.environ.get(SIDE_ENV, "").strip().lower()
    if not side.real and wanted != "standin" and (wanted == "real" or os.environ.get("CI")):
        pytest.fail(
            "interop: the real gem is not built (scripts/test builds ../shared/oracle into "
            ".oracle/); under CI, or with INTEROP_RUBY_SIDE=real, the stand-in is no "
            "substitute"
        )
    if not _USED:
        _USED.append(side)
        if not side.real:
            # Shown in the warnings summary (the project turns warnings into errors).
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                warnings.warn(side.banner(), stacklevel=2)
    return side


def ruby_side_used() -> RubySide | None:
    """The Ruby side the end-to-end tests of this session ran against (None: none ran)."""
    return _USED[0] if _USED else None


def ruby_side_banner() -> str:
    """The banner of the side this session would use (for the pytest header)."""
    return ruby_side().banner()


# --- processes --------------------------------------------------------------------------


class Child:
    """A subprocess with its output in a temporary file; always terminated and reaped."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], cwd: Path) -> None:
        self.name = name
        # Set by a test that kills or stops the process itself: its exit is not a failure.
        self.exit_expected = False
        self._terminated = False
        # Closed in stop(): the log outlives this constructor.
        self._log: IO[bytes] = tempfile.TemporaryFile(prefix=f"interop-{name}-")  # noqa: SIM115
        self.process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
        )

    def output(self) -> str:
        """The tail of the process's output (for failure messages)."""
        self._log.flush()
        self._log.seek(0)
        lines = self._log.read().decode("utf-8", "replace").splitlines(keepends=True)
        # Sidekiq 6.4 with the redis gem 4.8 warns on every BRPOP; keep the log readable.
        kept = "".join(line for line in lines if not line.startswith(NOISE))
        return f"--- {self.name} output ---\n" + kept[-6000:]

    def kill(self) -> None:
        """SIGKILL the process (a crash: nothing of it runs afterwards) and reap it."""
        self.exit_expected = True
        self.process.kill()
        self.process.wait(timeout=STOP_TIMEOUT)

    def terminate(self) -> None:
        """Send TERM once (a second TERM may mean something else to a worker)."""
        if self.process.poll() is None and not self._terminated:
            self._terminated = True
            self.process.terminate()

    def stop(self) -> None:
        """TERM, then KILL after STOP_TIMEOUT; reap; close the log."""
        try:
            if self.process.poll() is None:
                self.terminate()
                try:
                    self.process.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=STOP_TIMEOUT)
        finally:
            self._log.close()


def identities_of(client: redis.Redis, child: Child) -> list[str]:
    """The Sidekiq identities (``processes`` members) of ``child``'s pid."""
    members: set[bytes] = client.smembers(keys.PROCESSES)  # type: ignore[assignment]
    pid = str(child.process.pid)
    return [m.decode() for m in members if m.decode().split(":")[1:2] == [pid]]


def _wait_registered(client: redis.Redis, child: Child, identities: int) -> None:
    """Wait until ``identities`` Sidekiq identities of ``child``'s pid are in ``processes``."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if len(identities_of(client, child)) >= identities:
            return
        if child.process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(
                f"{child.name} did not register (exit code {child.process.poll()})\n"
                + child.output()
            )
        time.sleep(0.05)


def _which(name: str) -> str:
    from tests.support.programs import require_binary

    return require_binary(name)


def start_ruby_sidekiq(side: RubySide, redis_url: str, env: dict[str, str]) -> Child:
    """A real Ruby Sidekiq server working the Ruby callback queue (see :class:`RubySide`)."""
    full_env = side.env({"REDIS_URL": redis_url, "ORACLE_REDIS_URL": redis_url, **env})
    argv = side.sidekiq_argv([RUBY_CALLBACK_QUEUE], 5)
    return Child("ruby-sidekiq", argv, full_env, RUBY_DIR)


def start_python_worker(redis_url: str, options: Sequence[str]) -> Child:
    """``python -m patient_sidekiq run`` on the request queue, Ruby callbacks routed to Ruby."""
    argv = [
        sys.executable, "-m", "patient_sidekiq", "run",
        "--redis-url", redis_url,
        "-q", REQUEST_QUEUE,
        "--callback-queue", RUBY_CALLBACK_QUEUE,
        "--python-callback-queue", PYTHON_CALLBACK_QUEUE,
        "--shutdown-timeout", "5",
        *options,
    ]  # fmt: skip
    env = {**os.environ, REDIS_URL_ENV: redis_url}
    for name in list(env):
        if name.startswith("PATIENT_HTTP_"):
            del env[name]  # only the flags given here configure the worker
    return Child("patient-sidekiq", argv, env, ROOT)


# --- the HTTP test server in a thread of its own -----------------------------------------


@contextlib.contextmanager
def background_http_server() -> Iterator[str]:
    """Serve ``tests.support.http.app`` over HTTP/1.1 in a thread; yield its base URL."""
    import trio

    from tests.support.http import start_hypercorn

    ready: dict[str, Any] = {}
    started = threading.Event()

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            server = await start_hypercorn(nursery)
            ready["url"] = server.url("")
            ready["token"] = trio.lowlevel.current_trio_token()
            ready["cancel"] = nursery.cancel_scope.cancel
            started.set()

    def run() -> None:
        try:
            trio.run(serve)
        except BaseException as exc:  # surfaced by the waiting test thread
            ready["error"] = exc
            started.set()

    thread = threading.Thread(target=run, name="interop-http", daemon=True)
    thread.start()
    if not started.wait(READY_TIMEOUT) or "error" in ready:
        raise AssertionError(f"the HTTP test server did not start: {ready.get('error')!r}")
    try:
        yield str(ready["url"])
    finally:
        ready["token"].run_sync_soon(ready["cancel"])
        thread.join(STOP_TIMEOUT)


# --- the stack and its helpers -----------------------------------------------------------


@dataclass
class E2E:
    """One running stack: Redis, HTTP server, Ruby Sidekiq, Python worker."""

    redis_url: str
    http_url: str
    redis: redis.Redis
    side: RubySide
    children: list[Child] = field(default_factory=list)

    def url(self, path: str) -> str:
        """An absolute URL on the HTTP test server."""
        return self.http_url + path

    def start_python(self, options: Sequence[str] = (), *, callbacks: bool = False) -> Child:
        """Start one more ``patient-sidekiq run`` worker; return it once it is registered.

        ``callbacks`` loads ``Interop::PyRecorder`` (``-r tests.interop.e2e_harness``), so
        the worker also runs its Python callback launcher (a second Sidekiq identity).
        """
        argv = [*options, "-r", "tests.interop.e2e_harness"] if callbacks else list(options)
        python = start_python_worker(self.redis_url, argv)
        self.children.append(python)
        _wait_registered(self.redis, python, 2 if callbacks else 1)
        return python

    def python_worker(self) -> Child:
        """The (first) running ``patient-sidekiq run`` child."""
        return next(c for c in self.children if c.name == "patient-sidekiq" and not c.exit_expected)

    def wait_until(
        self, condition: Callable[[], Any], what: str, timeout: float = READY_TIMEOUT
    ) -> None:
        """Poll ``condition`` until true; fail naming ``what`` (with the children's output)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting until {what}\n" + self.outputs())
            time.sleep(0.05)

    def ruby(self, program: str, payload: dict[str, Any] | None = None) -> Any:
        """Run a Ruby program with Sidekiq's client API pointed at this stack's Redis.

        ``program`` starts after the preamble of ``tests.interop.conftest.SIDEKIQ_CLIENT``
        (``input`` is ``payload`` plus ``"url"``); its last stdout line is parsed as JSON.
        The Sidekiq is the Ruby side's: 7.3.10 with the real gem, Debian's 6.4 otherwise.
        """
        from tests.interop.conftest import SIDEKIQ_CLIENT, run_ruby

        payload = {**(payload or {}), "url": self.redis_url}
        return run_ruby(SIDEKIQ_CLIENT + program, payload, self.side.env())

    def ruby_script(self, script: Path, instructions: dict[str, Any]) -> Any:
        """Run a ``ruby_interop/`` script with JSON ``instructions`` (plus ``redis_url``)."""
        from tests.interop.conftest import run_ruby_args

        payload = {**instructions, "redis_url": self.redis_url}
        return run_ruby_args([str(script)], payload, self.side.env())

    def web_tab(self) -> dict[str, Any]:
        """The gem's Web-tab numbers computed by Ruby from what is in Redis now.

        ``totals`` (Stats#get_totals), ``avg_duration``, ``max_capacity``,
        ``current_inflight``, ``utilization``, ``processes`` (``host:pid`` ->
        ``{inflight, max_capacity}``) and ``pruned`` (process ids dropped because their
        max_connections key expired). With the real gem the figures are read off the
        rendered tab (``page``: everything it shows); the stand-in computes them.
        """
        if not self.side.real:
            tab: dict[str, Any] = self.ruby_script(MONITOR_SCRIPT, {"action": "web_tab"})
            return {**tab, "page": None}
        answer = self.ruby_script(GEM_MONITOR_SCRIPT, {"action": "web_tab"})
        page = answer["page"]
        return {
            "totals": answer["totals"],
            "avg_duration": page["avg_duration"],
            "max_capacity": page["max_capacity"],
            "current_inflight": page["current_inflight"],
            "utilization": page["utilization"],
            "processes": {
                key: {"inflight": p["inflight"], "max_capacity": p["max_capacity"]}
                for key, p in page["processes"].items()
            },
            "pruned": answer["pruned"],
            "page": page,
        }

    def sweep(self, *, orphan_threshold: float, heartbeat_interval: float) -> dict[str, Any]:
        """One orphan sweep by Ruby (the gem's monitor-thread pass, or the stand-in's).

        Answers ``requeued_task_ids`` (sorted) and ``requeued_jids`` (sorted).
        """
        instructions = {
            "action": "sweep",
            "orphan_threshold": orphan_threshold,
            "heartbeat_interval": heartbeat_interval,
        }
        if not self.side.real:
            done = self.ruby_script(MONITOR_SCRIPT, instructions)
            return {
                "requeued_task_ids": sorted(item["task_id"] for item in done["requeued"]),
                "requeued_jids": sorted(item["jid"] for item in done["requeued"]),
            }
        done = self.ruby_script(GEM_MONITOR_SCRIPT, instructions)
        return {
            "requeued_task_ids": done["requeued_task_ids"],
            "requeued_jids": sorted(item["jid"] for item in done["pushed"]),
        }

    def start_ruby_processor(
        self,
        *,
        queue: str,
        callback_queue: str,
        config: dict[str, Any] | None = None,
        encryption_keys: Sequence[str] = (),
        payload_threshold: int | None = None,
    ) -> Child:
        """The real gem's async processor in a Sidekiq 7.3.10 server (real gem side only).

        It works ``queue`` (RequestWorker jobs) and pushes CallbackWorker jobs to
        ``callback_queue``; ``config`` is PatientHttp::Sidekiq configuration
        (``ORACLE_CONFIG_JSON``), ``encryption_keys`` its keys (the first encrypts) and
        ``payload_threshold`` turns on the ``redis`` payload store with that threshold.
        Returned once its Sidekiq process is registered.
        """
        import pytest

        if not self.side.real:
            pytest.skip("needs the real gem's processor (the stand-in has none)")
        env = {
            "REDIS_URL": self.redis_url,
            "ORACLE_REDIS_URL": self.redis_url,
            "ORACLE_REQUEST_QUEUE": queue,
            "ORACLE_CALLBACK_QUEUE": callback_queue,
            "ORACLE_CONFIG_JSON": json.dumps(config or {}),
        }
        if encryption_keys:
            env["ORACLE_ENCRYPTION_KEY"] = json.dumps(list(encryption_keys))
        if payload_threshold is not None:
            env["ORACLE_PAYLOAD_STORE"] = "redis"
            env["ORACLE_PAYLOAD_STORE_NAME"] = "redis"
            env["ORACLE_PAYLOAD_THRESHOLD"] = str(payload_threshold)
        argv = self.side.sidekiq_argv([queue], 5)
        child = Child("ruby-processor", argv, self.side.env(env), RUBY_DIR)
        self.children.append(child)
        _wait_registered(self.redis, child, 1)
        return child

    def outputs(self) -> str:
        """Every child's output tail, for a failure message."""
        return "\n".join(child.output() for child in self.children)

    def ruby_enqueue(
        self,
        requests: Iterable[dict[str, Any]],
        *,
        encryption_keys: Sequence[str] = (),
        payload_threshold: int | None = None,
    ) -> list[dict[str, Any]]:
        """Enqueue from Ruby (the gem's ``PatientHttp::Sidekiq.execute``, or the stand-in's);
        return its ``{request_id, jid, data}``s."""
        instructions = {
            "queue": REQUEST_QUEUE,
            "encryption_keys": list(encryption_keys),
            "payload_threshold": payload_threshold,
            "requests": list(requests),
        }
        enqueued: list[dict[str, Any]] = self.ruby_script(self.side.enqueue_script, instructions)
        return enqueued

    def reset(self) -> None:
        """Forget earlier tests' records and failed jobs (processes keep running)."""
        self.redis.delete(RECORDS, "retry", "dead")

    def failed_jobs(self) -> list[dict[str, Any]]:
        """Jobs either side filed into ``retry`` or ``dead``: none are expected here."""
        raws: list[bytes] = [
            *self.redis.zrange("retry", 0, -1),
            *self.redis.zrange("dead", 0, -1),
        ]
        return [json.loads(raw) for raw in raws]

    def records(
        self, request_ids: Sequence[str], timeout: float = RECORD_TIMEOUT
    ) -> dict[str, Any]:
        """Wait until every request id has a record; return them by request id.

        Fails (with the children's output) at the deadline, as soon as a job lands in
        ``retry``/``dead`` (a request or callback job raised), or when a request id has
        more than one record (a callback must run exactly once).
        """
        deadline = time.monotonic() + timeout
        while True:
            seen: dict[str, list[dict[str, Any]]] = {}
            for raw in self.redis.lrange(RECORDS, 0, -1):
                entry = json.loads(raw)
                seen.setdefault(entry.get("request_id"), []).append(entry)
            if all(rid in seen for rid in request_ids):
                doubles = {rid: seen[rid] for rid in request_ids if len(seen[rid]) > 1}
                assert not doubles, f"callbacks ran more than once: {doubles}"
                return {rid: seen[rid][0] for rid in request_ids}
            if time.monotonic() > deadline:
                missing = [rid for rid in request_ids if rid not in seen]
                raise AssertionError(
                    f"no record for {missing} after {timeout} s; records: {seen}\n" + self.outputs()
                )
            failed = self.failed_jobs()
            if failed:
                summary = [
                    (job.get("class"), job.get("error_class"), job.get("error_message"))
                    for job in failed
                ]
                raise AssertionError(f"jobs failed: {summary}\n" + self.outputs())
            for child in self.children:
                if child.process.poll() is not None and not child.exit_expected:
                    raise AssertionError(f"{child.name} exited\n" + self.outputs())
            time.sleep(0.05)

    def record(self, request_id: str) -> dict[str, Any]:
        """The one record of ``request_id`` (waits)."""
        found: dict[str, Any] = self.records([request_id])[request_id]
        return found


@contextlib.contextmanager
def e2e_stack(
    *,
    python_options: Sequence[str] | None = (),
    ruby_encryption_keys: Sequence[str] = (),
    ruby_payload_store: bool = False,
    python_callbacks: bool = False,
) -> Iterator[E2E]:
    """Start a private Redis, the HTTP server, the Ruby Sidekiq and the Python worker.

    ``python_options=None`` starts no Python worker (the test starts its own with
    :meth:`E2E.start_python`). ``python_callbacks`` loads ``Interop::PyRecorder`` into the
    worker (which then also runs its Python callback launcher). ``ruby_encryption_keys``
    and ``ruby_payload_store`` configure the Ruby callback server (decryption keys, the
    ``redis`` payload store). Everything is stopped and reaped on exit.
    """
    from tests.support.redis import RedisServer

    side = require_ruby_side()

    with tempfile.TemporaryDirectory(prefix="interop-e2e-") as directory:
        server = RedisServer(Path(directory))
        server.start()
        client = redis.Redis.from_url(server.url)
        try:
            with background_http_server() as http_url:
                stack = E2E(server.url, http_url, client, side)
                try:
                    ruby_env = side.callback_env(ruby_encryption_keys, ruby_payload_store)
                    ruby = start_ruby_sidekiq(side, server.url, ruby_env)
                    stack.children.append(ruby)
                    if python_options is not None:
                        stack.start_python(python_options, callbacks=python_callbacks)
                    _wait_registered(client, ruby, 1)
                    yield stack
                finally:
                    # TERM all at once (each Sidekiq takes a moment to stop), then reap.
                    for child in stack.children:
                        child.terminate()
                    for child in reversed(stack.children):
                        child.stop()
        finally:
            client.close()
            server.stop()
