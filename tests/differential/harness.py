"""Run one batch of gem-enqueued requests through the real gem's processor and through ours.

The real gem enqueues every request of a :class:`Group` once, into Redis database 1
(``enqueue_batch.rb``). Every key is then copied byte for byte into database 2, so both
processors see the very same RequestWorker jobs (same jids, same request ids):

- database 1: the real gem's processor inside real Sidekiq 7.3.10 (``oracle_boot.rb``),
  which also works the callback queue with the real CallbackWorker;
- database 2: ``python -m patient_sidekiq run``, beside a real Sidekiq that works only the
  callback queue with the real CallbackWorker.

The callback of every request is the oracle's ``OracleCallback``: it appends what the Ruby
callback saw (and the CallbackWorker job it ran in) to ``oracle:results``. When both sides
have accounted for every request, :meth:`DifferentialRun.collect` reads each database into a
:class:`SideState` for the comparison in ``normalize.py``.

A group may use a payload store whose data lives outside Redis (:class:`ExternalStore`: a
directory, an S3 bucket, an SQL table). Each side then has its own copy, filled by the
enqueuer on the gem's side and copied to ours after enqueueing, like the Redis keys: each
processor (and the Ruby CallbackWorker beside it) reads and deletes payloads in its own copy
only, and what each copy holds at the end is part of the comparison.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import redis

from patient_sidekiq import keys
from tests.interop.e2e_harness import Child
from tests.support.oracle import ROOT, oracle_env
from tests.support.programs import free_port, require_binary
from tests.support.redis import RedisServer

HERE = Path(__file__).resolve().parent
ENQUEUE = HERE / "enqueue_batch.rb"
REQUEST_QUEUE = "patient_http"
CALLBACK_QUEUE = "callbacks"
RESULTS = "oracle:results"
GEM_DB = 1
OURS_DB = 2
READY_TIMEOUT = 30.0
STORE_THRESHOLD = 1000
"""The payload_store_threshold of every external store group, in bytes (both sides)."""


@dataclass(frozen=True)
class Group:
    """Requests that share one processor configuration (one run of both processors).

    ``gem_config`` is the gem's ``PatientHttp::Sidekiq::Configuration`` (ORACLE_CONFIG_JSON),
    ``ours`` the same settings as ``patient-sidekiq run`` flags; ``oracle_env`` more ORACLE_*
    variables read by both the enqueuer and the gem's processes (encryption, payload store,
    secrets, preprocessors).
    """

    name: str
    requests: tuple[dict[str, Any], ...]
    gem_config: dict[str, Any] = field(default_factory=dict)
    ours: tuple[str, ...] = ()
    oracle_env: dict[str, str] = field(default_factory=dict)
    timeout: float = 60.0
    store: ExternalStore | None = None
    """A payload store outside Redis: its boot file registers it on the gem's side, ours
    gets its ``--payload-store`` flags, each side its own copy of what the enqueuer stored."""
    boot: str | None = None
    """A Ruby file beside this one that every Ruby process loads instead of the oracle's
    boot file (it loads that file itself, then registers what the oracle does not wire:
    custom encryption). A ``store`` brings its own."""
    ours_env: dict[str, str] = field(default_factory=dict)
    """More environment for ``patient-sidekiq run`` (secrets it reads, say)."""


@dataclass
class SideState:
    """What one processor left: callback records by request id, and its Redis state."""

    records: dict[str, list[dict[str, Any]]]
    retry: list[dict[str, Any]]
    dead: list[dict[str, Any]]
    queues: dict[str, int]
    stats: dict[str, str]
    totals: dict[str, str]
    inflight: dict[str, int]
    leftover_keys: list[str]
    """Redis keys nothing above accounts for, then the payloads left in the group's external
    store (``file:<name>``, ``s3:<object key>``, ``row:<key>``)."""
    metrics: dict[str, int] = field(default_factory=dict)
    """Sidekiq 7's execution metrics summed over every minute (``Class|p`` …)."""


# --- Payload stores outside Redis -----------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """Where one side of one run keeps its copy of an external store."""

    db: int
    directory: Path
    """The run's private directory (both sides share it; names inside say which side)."""
    run_id: str
    """Unique to the run: names of buckets and databases on servers shared by many runs."""

    @property
    def name(self) -> str:
        """``gem`` or ``ours``."""
        return "gem" if self.db == GEM_DB else "ours"


class ExternalStore:
    """A payload store of the gem whose data lives outside Redis, for :attr:`Group.store`.

    Every Ruby process of a side loads :attr:`boot`, which registers the gem's store on that
    side's copy (named by :meth:`environment`); ours gets :meth:`flags` for its copy. The
    enqueuer writes into the gem's copy; :meth:`copy` then gives ours the same payloads before
    any processor starts. :meth:`leftovers` lists what a copy still holds at the end, so a
    store that keeps or deletes payloads differently shows in the comparison.
    """

    boot: ClassVar[str]
    """The Ruby file beside this one that registers the gem's store."""
    servers: ClassVar[tuple[str, ...]] = ()
    """Servers the store needs, by their key in the URLs ``scenarios.groups`` gets."""

    def prepare(self, side: Side) -> None:
        """Make the side's store empty and ready, before the enqueuer runs."""

    def environment(self, side: Side) -> dict[str, str | None]:
        """More environment of every process of the side, Ruby or ours (None: unset)."""
        return {"DIFFERENTIAL_STORE_THRESHOLD": str(STORE_THRESHOLD)}

    def flags(self, side: Side) -> tuple[str, ...]:
        """Our ``patient-sidekiq run`` flags for the side's copy."""
        raise NotImplementedError

    def copy(self, gem: Side, ours: Side) -> None:
        """Give ours' copy everything the enqueuer stored in the gem's."""
        raise NotImplementedError

    def leftovers(self, side: Side) -> list[str]:
        """The payloads the side's copy still holds, as ``<kind>:<name>``."""
        raise NotImplementedError


@dataclass(frozen=True)
class FileStore(ExternalStore):
    """The gem's ``:file`` store: a directory per side (``file_store_boot.rb``)."""

    boot: ClassVar[str] = "file_store_boot.rb"

    @staticmethod
    def _directory(side: Side) -> Path:
        return side.directory / f"files-{side.name}"

    def prepare(self, side: Side) -> None:
        self._directory(side).mkdir()

    def environment(self, side: Side) -> dict[str, str | None]:
        return {**super().environment(side), "DIFFERENTIAL_FILE_STORE": str(self._directory(side))}

    def flags(self, side: Side) -> tuple[str, ...]:
        return (
            f"--payload-store=files=file:{self._directory(side)}",
            f"--payload-store-threshold={STORE_THRESHOLD}",
        )

    def copy(self, gem: Side, ours: Side) -> None:
        shutil.copytree(self._directory(gem), self._directory(ours), dirs_exist_ok=True)

    def leftovers(self, side: Side) -> list[str]:
        return sorted(f"file:{path.name}" for path in self._directory(side).iterdir())


@dataclass(frozen=True)
class S3Objects(ExternalStore):
    """The gem's ``:s3`` store on an S3-compatible server (moto): a bucket per side
    (``s3_store_boot.rb``), both with the same non-default ``key_prefix``."""

    endpoint: str
    key_prefix: str = "differential/payloads/"
    boot: ClassVar[str] = "s3_store_boot.rb"
    servers: ClassVar[tuple[str, ...]] = ("s3",)

    @staticmethod
    def _bucket(side: Side) -> str:
        return f"differential-{side.run_id}-{side.name}"

    def _client(self) -> Any:
        from tests.support.s3 import boto_client  # after pytest registered it as a plugin

        return boto_client(self.endpoint)

    def prepare(self, side: Side) -> None:
        client = self._client()
        try:
            client.create_bucket(Bucket=self._bucket(side))
        finally:
            client.close()

    def environment(self, side: Side) -> dict[str, str | None]:
        from tests.support.s3 import UNSET_AWS_VARIABLES, dummy_aws_environment

        return {
            **super().environment(side),
            **dict.fromkeys(UNSET_AWS_VARIABLES),
            **dummy_aws_environment(side.directory / "aws-home"),
            "DIFFERENTIAL_S3_ENDPOINT": self.endpoint,
            "DIFFERENTIAL_S3_BUCKET": self._bucket(side),
            "DIFFERENTIAL_S3_KEY_PREFIX": self.key_prefix,
        }

    def flags(self, side: Side) -> tuple[str, ...]:
        from tests.support.s3 import REGION

        options = (
            f"bucket={self._bucket(side)}&key_prefix={self.key_prefix}"
            f"&endpoint_url={self.endpoint}&region={REGION}"
        )
        return (
            f"--payload-store=objects=s3:{options}",
            f"--payload-store-threshold={STORE_THRESHOLD}",
        )

    def copy(self, gem: Side, ours: Side) -> None:
        client = self._client()
        try:
            for key in self._keys(client, gem):
                # a server-side copy keeps the object's body and content type
                client.copy_object(
                    Bucket=self._bucket(ours),
                    Key=key,
                    CopySource={"Bucket": self._bucket(gem), "Key": key},
                )
        finally:
            client.close()

    def leftovers(self, side: Side) -> list[str]:
        client = self._client()
        try:
            return [f"s3:{key}" for key in self._keys(client, side)]
        finally:
            client.close()

    def _keys(self, client: Any, side: Side) -> list[str]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=self._bucket(side))
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


class ActiveRecordRows(ExternalStore):
    """The gem's ``:active_record`` store (``active_record_store_boot.rb``): rows of the gem
    migration's ``patient_http_payloads`` table, in a database per side."""

    boot: ClassVar[str] = "active_record_store_boot.rb"
    table: ClassVar[str] = "patient_http_payloads"

    def url(self, side: Side) -> str:
        """Our ``active_record`` store URL of the side's database."""
        raise NotImplementedError

    def flags(self, side: Side) -> tuple[str, ...]:
        return (
            f"--payload-store=rows=active_record:url={self.url(side)}",
            f"--payload-store-threshold={STORE_THRESHOLD}",
        )

    def leftovers(self, side: Side) -> list[str]:
        return [f"row:{key}" for key in self._keys(side)]

    def _keys(self, side: Side) -> list[str]:
        raise NotImplementedError


@dataclass(frozen=True)
class SqliteRows(ActiveRecordRows):
    """:class:`ActiveRecordRows` in an SQLite file per side; ours' is a copy of the gem's."""

    @staticmethod
    def _path(side: Side) -> Path:
        return side.directory / f"rows-{side.name}.sqlite3"

    def url(self, side: Side) -> str:
        return f"sqlite://{self._path(side)}"  # sqlite:///ABSOLUTE/PATH

    def environment(self, side: Side) -> dict[str, str | None]:
        return {**super().environment(side), "DIFFERENTIAL_AR_SQLITE": str(self._path(side))}

    def copy(self, gem: Side, ours: Side) -> None:
        # the enqueuer has exited: its writes are in the file (no journal or WAL left over)
        for suffix in ("", "-journal", "-wal", "-shm"):
            source = Path(f"{self._path(gem)}{suffix}")
            if source.exists():
                shutil.copyfile(source, f"{self._path(ours)}{suffix}")

    def _keys(self, side: Side) -> list[str]:
        import sqlite3

        connection = sqlite3.connect(self._path(side))
        try:
            rows = connection.execute(f'SELECT "key" FROM "{self.table}" ORDER BY "key"')
            return [str(key) for (key,) in rows]
        finally:
            connection.close()


@dataclass(frozen=True)
class PostgresRows(ActiveRecordRows):
    """:class:`ActiveRecordRows` in a PostgreSQL database per side, on one server; ours'
    is made from the gem's as its template once the enqueuer has exited."""

    server: str
    """The URL of the server's maintenance database (``…/postgres``)."""
    servers: ClassVar[tuple[str, ...]] = ("postgres",)

    @staticmethod
    def _database(side: Side) -> str:
        return f"differential_{side.run_id}_{side.name}"

    def url(self, side: Side) -> str:
        return f"{self.server.rsplit('/', 1)[0]}/{self._database(side)}"

    def _admin(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.server, autocommit=True) as connection:
            connection.execute(statement)

    def prepare(self, side: Side) -> None:
        if side.db == GEM_DB:  # ours' is made by copy()
            self._admin(f'CREATE DATABASE "{self._database(side)}"')

    def environment(self, side: Side) -> dict[str, str | None]:
        return {**super().environment(side), "DIFFERENTIAL_AR_URL": self.url(side)}

    def copy(self, gem: Side, ours: Side) -> None:
        self._admin(f'CREATE DATABASE "{self._database(ours)}" TEMPLATE "{self._database(gem)}"')

    def _keys(self, side: Side) -> list[str]:
        import psycopg

        with psycopg.connect(self.url(side)) as connection:
            rows = connection.execute(f'SELECT "key" FROM "{self.table}" ORDER BY "key"')
            return [str(key) for (key,) in rows]


@contextlib.contextmanager
def http_test_server(oracle: Path) -> Iterator[str]:
    """The oracle's deterministic HTTP/1.1 test server; yields its base URL (no slash)."""
    port = free_port()
    server = Child(
        "http_test_server",
        [require_binary("ruby"), str(oracle / "bin" / "http_test_server.rb"), str(port)],
        oracle_env(oracle),
        ROOT,
    )
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            with contextlib.suppress(OSError):
                import socket

                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            if server.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    "the oracle's HTTP test server did not start\n" + server.output()
                )
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


class DifferentialRun:
    """One group through both processors on one private redis-server."""

    def __init__(self, oracle: Path, group: Group, directory: Path) -> None:
        self.oracle = oracle
        self.group = group
        self.server = RedisServer(directory)
        self.children: list[Child] = []
        boot = group.store.boot if group.store else group.boot
        self.boot = HERE / boot if boot else oracle / "lib" / "oracle_boot.rb"
        run_id = uuid.uuid4().hex[:12]
        self.sides = {db: Side(db, directory, run_id) for db in (GEM_DB, OURS_DB)}

    def url(self, db: int) -> str:
        """The Redis URL of database ``db``."""
        return f"redis://127.0.0.1:{self.server.port}/{db}"

    def _ruby_env(self, db: int, **extra: str) -> dict[str, str]:
        env = oracle_env(self.oracle)
        for name in list(env):
            if name.startswith(("ORACLE_", "PATIENT_HTTP_")) and name not in (
                "ORACLE_ROOT",
                "ORACLE_VENDOR",
            ):
                del env[name]
        env.pop("REDIS_PROVIDER", None)
        env.update(
            ORACLE_REDIS_URL=self.url(db),
            REDIS_URL=self.url(db),
            ORACLE_REQUEST_QUEUE=REQUEST_QUEUE,
            ORACLE_CALLBACK_QUEUE=CALLBACK_QUEUE,
            ORACLE_CONFIG_JSON=json.dumps(self.group.gem_config),
            **self.group.oracle_env,
            **extra,
        )
        # before anything else: patient_http's autoloads resolved once (eager_load.rb says why)
        env["RUBYOPT"] = f"-r{HERE / 'eager_load.rb'} {env.get('RUBYOPT', '')}".strip()
        return self._with_store(env, db)

    def _with_store(self, env: dict[str, str], db: int) -> dict[str, str]:
        """``env`` plus the external store's environment for side ``db``."""
        if self.group.store:
            for name, value in self.group.store.environment(self.sides[db]).items():
                if value is None:
                    env.pop(name, None)
                else:
                    env[name] = value
        return env

    def _sidekiq(self, name: str, db: int, queues: Sequence[str], **extra: str) -> Child:
        argv = [
            require_binary("ruby"),
            str(self.oracle / "vendor" / "sidekiq-7.3.10" / "bin" / "sidekiq"),
            "-r", str(self.boot),
            "-c", "5", "-t", "5",
        ]  # fmt: skip
        for queue in queues:
            argv += ["-q", queue]
        child = Child(name, argv, self._ruby_env(db, **extra), ROOT)
        self.children.append(child)
        return child

    def _ours(self) -> Child:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PATIENT_HTTP_")}
        env.update(self.group.ours_env)
        env = self._with_store(env, OURS_DB)
        argv = [
            sys.executable, "-m", "patient_sidekiq", "run",
            "--redis-url", self.url(OURS_DB),
            "-q", REQUEST_QUEUE,
            "--callback-queue", CALLBACK_QUEUE,
            "--shutdown-timeout", "5",
            *self.group.ours,
        ]  # fmt: skip
        if self.group.store:
            argv += self.group.store.flags(self.sides[OURS_DB])
        child = Child("patient-sidekiq", argv, env, ROOT)
        self.children.append(child)
        return child

    def enqueue(self) -> list[dict[str, str]]:
        """Enqueue the group through the real gem into database 1; copy it (and the
        external store's copy) to database 2."""
        result = subprocess.run(
            [
                require_binary("ruby"),
                "-r",
                str(self.boot),
                str(ENQUEUE),
            ],
            input=json.dumps(list(self.group.requests)),
            capture_output=True,
            text=True,
            env=self._ruby_env(GEM_DB, ORACLE_PROCESSOR="0"),
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"enqueue_batch.rb failed:\n{result.stderr}")
        enqueued: list[dict[str, str]] = json.loads(result.stdout.strip().splitlines()[-1])
        source = redis.Redis.from_url(self.url(GEM_DB))
        try:
            for key in source.scan_iter():
                source.copy(key, key, destination_db=OURS_DB)
        finally:
            source.close()
        if self.group.store:
            self.group.store.copy(self.sides[GEM_DB], self.sides[OURS_DB])
        return enqueued

    def run(self) -> tuple[list[dict[str, str]], SideState, SideState]:
        """Enqueue, run both processors until done, collect both sides."""
        self.server.start()
        try:
            if self.group.store:
                for side in self.sides.values():
                    self.group.store.prepare(side)
            enqueued = self.enqueue()
            self._sidekiq("gem-processor", GEM_DB, [REQUEST_QUEUE, CALLBACK_QUEUE])
            self._sidekiq("gem-callbacks-for-ours", OURS_DB, [CALLBACK_QUEUE], ORACLE_PROCESSOR="0")
            self._ours()
            count = len(enqueued)
            self._wait_done(GEM_DB, count)
            self._wait_done(OURS_DB, count)
            # Sidekiq flushes its processed/failed counters on its beat and at shutdown:
            # read the state once every process has stopped.
            if os.environ.get("DIFFERENTIAL_LOGS"):
                Path(os.environ["DIFFERENTIAL_LOGS"]).write_text(self.outputs())
            self._stop_children()
            return enqueued, self.collect(GEM_DB), self.collect(OURS_DB)
        finally:
            self._stop_children()
            self.server.stop()

    def _stop_children(self) -> None:
        for child in self.children:
            child.terminate()  # all at once: each Sidekiq takes a moment to stop
        while self.children:
            self.children.pop().stop()

    def _wait_done(self, db: int, count: int) -> None:
        client = redis.Redis.from_url(self.url(db), decode_responses=True)
        deadline = time.monotonic() + self.group.timeout
        stable_since: dict[int, float] = {}
        try:
            while True:
                now = time.monotonic()
                accounted = (
                    client.llen(RESULTS) + client.zcard(keys.RETRY) + client.zcard(keys.DEAD)
                )
                busy = (
                    client.llen(keys.queue(REQUEST_QUEUE))
                    + client.llen(keys.queue(CALLBACK_QUEUE))
                    + client.hlen(keys.INFLIGHT_JOBS)
                )
                if busy == 0 and (accounted >= count or stable_since.get(accounted, now) < now - 3):
                    # the stats and the callback's Redis writes settle within a moment; a
                    # request the processor lost (the gem drops some) is given 3 s more
                    time.sleep(0.3)
                    return
                if busy:
                    stable_since.clear()
                stable_since = {accounted: stable_since.get(accounted, now)}
                for child in self.children:
                    if child.process.poll() is not None:
                        raise AssertionError(f"{child.name} exited\n" + self.outputs())
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"db {db}: {accounted}/{count} accounted, {busy} busy after "
                        f"{self.group.timeout} s\n" + self.outputs()
                    )
                time.sleep(0.1)
        finally:
            client.close()

    def outputs(self) -> str:
        """Every child's output tail."""
        return "\n".join(child.output() for child in self.children)

    def collect(self, db: int) -> SideState:
        """Read what one side left in its database."""
        client = redis.Redis.from_url(self.url(db), decode_responses=True)
        try:
            records: dict[str, list[dict[str, Any]]] = {}
            for raw in client.lrange(RESULTS, 0, -1):
                record = json.loads(raw)
                # an error of a redirect hop carries the hop's id, "<request id>/<hop>"
                request_id = str(record.get("request_id")).split("/")[0]
                records.setdefault(request_id, []).append(record)
            stats = {
                key: str(client.get(key))
                for key in client.scan_iter("stat:*")
                if client.type(key) == "string"
            }
            known = {RESULTS, keys.RETRY, keys.DEAD, keys.QUEUES, keys.PROCESSES, keys.TOTALS}
            leftovers = sorted(
                key
                for key in client.scan_iter()
                if key not in known
                and not key.startswith(("stat:", "queue:"))
                and not _is_process_key(key)
                and not _is_sidekiq_metrics_key(key)
            )
            return SideState(
                records=records,
                retry=[json.loads(j) for j in client.zrange(keys.RETRY, 0, -1)],
                dead=[json.loads(j) for j in client.zrange(keys.DEAD, 0, -1)],
                queues={q: client.llen(keys.queue(q)) for q in client.smembers(keys.QUEUES)},
                stats=stats,
                totals=client.hgetall(keys.TOTALS),
                inflight={
                    keys.INFLIGHT_JOBS: client.hlen(keys.INFLIGHT_JOBS),
                    keys.INFLIGHT_INDEX: client.zcard(keys.INFLIGHT_INDEX),
                },
                leftover_keys=leftovers + self._store_leftovers(db),
                metrics=_summed_metrics(client),
            )
        finally:
            client.close()

    def _store_leftovers(self, db: int) -> list[str]:
        """The payloads side ``db``'s external store still holds (none without one)."""
        return self.group.store.leftovers(self.sides[db]) if self.group.store else []


def _is_process_key(key: str) -> bool:
    """Keys that name a running process (host:pid:nonce…): different on each side by nature."""
    return (
        key.count(":") >= 2
        and not key.startswith(("patient_http:", "sidekiq:patient_http:inflight"))
        and (
            key.startswith(("sidekiq:patient_http:processes", "patient_sidekiq:"))
            or key.split(":")[1].isdigit()
            or key.endswith(("-signals", ":work", ":workers"))
        )
    ) or key in (keys.GC_LAST_RUN, keys.GC_LOCK, keys.GEM_PROCESSES, keys.PROCESS_CLEANUP)


def _is_sidekiq_metrics_key(key: str) -> bool:
    """Sidekiq 7's execution metrics (``j|YYYYMMDD|HH:MM``, ``Class-DD-HH:MM`` histograms).

    Flushed on Sidekiq's own timer, so whether a run leaves them is a matter of timing; our
    worker does not write them (ARCHITECTURE.md, deviations).
    """
    return key.startswith("j|") or bool(re.fullmatch(r".+-\d\d-\d\d:\d\d?", key))


def _summed_metrics(client: redis.Redis) -> dict[str, int]:
    summed: dict[str, int] = {}
    for key in client.scan_iter("j|*"):
        for name, value in client.hgetall(key).items():
            summed[name] = summed.get(name, 0) + int(value)
    return summed
