"""The gem's ``:active_record`` payload store, as rows of an SQL table (SQLite or PostgreSQL).

A Ruby app that registers ``register_payload_store(name, adapter: :active_record)`` keeps
large payloads in a database table through
``PatientHttp::PayloadStore::ActiveRecordStore``; this class reads and writes the same rows,
so either side can store a payload the other one fetches and deletes. It touches no Redis
keys: the job carries only the ``{"$ref": …}`` reference, the payload lives in the table.

The table is the one the gem's migration (``db/migrate/…_create_patient_http_payloads.rb``
of patient_http 1.3.0, installed with ``rails patient_http:install:migrations``) creates,
with Rails' defaults for the column types::

    patient_http_payloads           (no "id" column and no primary key)
      key         varchar(36)  NOT NULL    unique index index_<table>_on_key
      data        text         NOT NULL    the exact JSON text the writer produced
      created_at  datetime(6)  NOT NULL    index index_<table>_on_created_at
      updated_at  datetime(6)  NOT NULL

PostgreSQL spells the types ``character varying(36)`` and ``timestamp(6) without time
zone``. :meth:`SqlPayloadStore.create_table_sync` creates exactly that (if missing) for apps
without Rails and for tests; a Rails app runs the gem's migration instead.

The operations are the gem adapter's: a write is an upsert on ``key`` that replaces ``data``
and ``updated_at`` but keeps ``created_at`` (the gem's ``update_only: [:data, :updated_at]``);
a read selects the row by key (no row: ``None``); a delete removes it (idempotent). The
timestamps are written as ActiveRecord writes them, in UTC: SQLite has no date type, so they
are text ``YYYY-MM-DD HH:MM:SS.ffffff`` (without the fraction when it is zero, as
ActiveRecord quotes times), and PostgreSQL gets a ``timestamp`` value. Ruby's queries on them
(the model's ``older_than`` scope, a cleanup job) then see our rows like its own; on SQLite
they compare as text, so the exact format matters.

Both database drivers block, so the async methods run them in a worker thread; the ``*_sync``
methods serve synchronous callers (the enqueue client). One connection per store, behind a
lock: payload storage is rare and off the hot path, so serialising it costs nothing and
keeps the drivers' thread rules out of the picture.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import unquote, urlsplit

from patient_sidekiq.errors import ConfigurationError, PayloadStoreError
from patient_sidekiq.redis_io.redis_target import hide_password
from patient_sidekiq.wire.payload_store import ThreadedPayloadStore

if TYPE_CHECKING:
    import psycopg

__all__ = ["DEFAULT_TABLE", "SqlPayloadStore"]

DEFAULT_TABLE: Final = "patient_http_payloads"
"""The gem model's ``table_name``."""

URL_FORMS: Final = (
    "sqlite:///ABSOLUTE/PATH.db, sqlite:RELATIVE/PATH.db or "
    "postgresql://USER:PASSWORD@HOST:PORT/DATABASE (postgres:// too)"
)

# A plain SQL identifier that needs no quoting rules beyond double quotes; 63 characters is
# PostgreSQL's limit (longer names are silently cut, so two stores could share a table).
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_MAX_IDENTIFIER: Final = 63
_SQLITE_SCHEMES: Final = frozenset({"sqlite", "sqlite3"})
_POSTGRES_SCHEMES: Final = frozenset({"postgresql", "postgres"})
# libpq waits for a connection forever by default; a payload read must fail, not hang.
_CONNECT_TIMEOUT_SECONDS: Final = 10
# ActiveRecord's SQLite adapter waits 5 s for a lock held by another writer (its default
# ``timeout: 5000``); the Ruby app and this worker may write the same file.
_SQLITE_BUSY_SECONDS: Final = 5.0
_KEY_SHOWN: Final = 80  # keys come from jobs: an error message shows at most this much

_T = TypeVar("_T")


def _index_name(table: str, column: str) -> str:
    """Rails' default index name, hashed when it would pass PostgreSQL's identifier limit
    (cut names could make the two indexes of one table collide)."""
    name = f"index_{table}_on_{column}"
    if len(name) <= _MAX_IDENTIFIER:
        return name
    return f"idx_{hashlib.sha256(name.encode()).hexdigest()[:16]}_on_{column}"


def _sqlite_time(now: datetime) -> str:
    # ActiveRecord's quoted_date: "%Y-%m-%d %H:%M:%S" plus ".%06d" only when usec > 0.
    text = now.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{now.microsecond:06d}" if now.microsecond else text


def _check_text(value: str, what: str) -> None:
    # Lone surrogates (JSON "\ud800" decodes to one) cannot go to either database as UTF-8;
    # the drivers would raise UnicodeEncodeError, which is not one of their own errors.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PayloadStoreError(f"{what} cannot be encoded as UTF-8: {exc}") from exc


class _SqliteBackend:
    """One ``sqlite3`` connection in autocommit mode, opened on first use."""

    def __init__(self, path: str, table: str) -> None:
        self.path = path
        self.table = table
        self.errors: tuple[type[Exception], ...] = (sqlite3.Error,)
        self._connection: sqlite3.Connection | None = None

    @property
    def connected(self) -> bool:
        return self._connection is not None

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            # isolation_level=None: every statement commits by itself, as each store call is
            # one statement. check_same_thread=False: trio hands calls to different worker
            # threads; the store's lock keeps them one at a time.
            self._connection = sqlite3.connect(
                self.path,
                timeout=_SQLITE_BUSY_SECONDS,
                isolation_level=None,
                check_same_thread=False,
            )
        return self._connection

    def upsert(self, key: str, json_text: str, now: datetime) -> None:
        stamp = _sqlite_time(now)
        self._connect().execute(
            f'INSERT INTO "{self.table}" ("key", "data", "created_at", "updated_at") '
            "VALUES (?, ?, ?, ?) "
            'ON CONFLICT ("key") DO UPDATE SET "data" = excluded."data", '
            '"updated_at" = excluded."updated_at"',
            (key, json_text, stamp, stamp),
        )

    def select(self, key: str) -> object:
        row = (
            self._connect()
            .execute(f'SELECT "data" FROM "{self.table}" WHERE "key" = ? LIMIT 1', (key,))
            .fetchone()
        )
        return None if row is None else row[0]

    def delete(self, key: str) -> None:
        self._connect().execute(f'DELETE FROM "{self.table}" WHERE "key" = ?', (key,))

    def create_table(self) -> None:
        connection = self._connect()
        connection.execute(
            f'CREATE TABLE IF NOT EXISTS "{self.table}" ('
            '"key" varchar(36) NOT NULL, "data" text NOT NULL, '
            '"created_at" datetime(6) NOT NULL, "updated_at" datetime(6) NOT NULL)'
        )
        connection.execute(
            f'CREATE UNIQUE INDEX IF NOT EXISTS "{_index_name(self.table, "key")}" '
            f'ON "{self.table}" ("key")'
        )
        connection.execute(
            f'CREATE INDEX IF NOT EXISTS "{_index_name(self.table, "created_at")}" '
            f'ON "{self.table}" ("created_at")'
        )

    def dropped(self, exc: Exception) -> bool:
        return False  # a file has no connection to lose

    def missing_table(self, exc: Exception) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc)

    def describe(self, exc: Exception) -> str:
        return str(exc)

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


class _PostgresBackend:
    """One psycopg 3 connection in autocommit mode, opened on first use."""

    def __init__(self, url: str, table: str) -> None:
        try:
            import psycopg
            from psycopg import sql
        except ImportError as exc:
            raise ConfigurationError(
                "a postgresql:// payload store needs psycopg 3: "
                "pip install 'patient-sidekiq[postgresql]'"
            ) from exc
        self._psycopg = psycopg
        # libpq knows the two schemes in lower case only.
        scheme, _, rest = url.partition(":")
        url = f"{scheme.lower()}:{rest}"
        try:
            params = psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.Error as exc:
            # libpq's message quotes the URL, password and all.
            detail = " ".join(str(exc).replace(url, hide_password(url)).split())
            raise ConfigurationError(
                f"payload store url {hide_password(url)} is not a PostgreSQL URL: {detail}"
            ) from None
        self.password = str(params["password"]) if params.get("password") else None
        self._url = url
        self._extra: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in params:
            self._extra["connect_timeout"] = _CONNECT_TIMEOUT_SECONDS
        self.errors: tuple[type[Exception], ...] = (psycopg.Error,)
        self._connection: psycopg.Connection[tuple[Any, ...]] | None = None
        name = sql.Identifier(table)
        self._upsert = sql.SQL(
            'INSERT INTO {} ("key", "data", "created_at", "updated_at") '
            "VALUES (%s, %s, %s, %s) "
            'ON CONFLICT ("key") DO UPDATE SET "data" = excluded."data", '
            '"updated_at" = excluded."updated_at"'
        ).format(name)
        self._select = sql.SQL('SELECT "data" FROM {} WHERE "key" = %s LIMIT 1').format(name)
        self._delete = sql.SQL('DELETE FROM {} WHERE "key" = %s').format(name)
        self._create = [
            sql.SQL(
                'CREATE TABLE IF NOT EXISTS {} ("key" character varying(36) NOT NULL, '
                '"data" text NOT NULL, "created_at" timestamp(6) without time zone NOT NULL, '
                '"updated_at" timestamp(6) without time zone NOT NULL)'
            ).format(name),
            sql.SQL('CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ("key")').format(
                sql.Identifier(_index_name(table, "key")), name
            ),
            sql.SQL('CREATE INDEX IF NOT EXISTS {} ON {} ("created_at")').format(
                sql.Identifier(_index_name(table, "created_at")), name
            ),
        ]

    @property
    def connected(self) -> bool:
        return self._connection is not None

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._connection is None:
            connection = self._psycopg.connect(self._url, **self._extra)
            try:
                # Text in and out as UTF-8 whatever the database's own encoding; times in
                # UTC, as ActiveRecord sets its sessions, so a timestamptz column (a
                # hand-made table) gets the same instant as a timestamp one.
                connection.execute("SET client_encoding TO 'UTF8'")
                connection.execute("SET TIME ZONE 'UTC'")
            except BaseException:
                connection.close()
                raise
            self._connection = connection
        return self._connection

    def upsert(self, key: str, json_text: str, now: datetime) -> None:
        # A naive UTC datetime binds as "timestamp": stored as is, no time zone conversion.
        stamp = now.replace(tzinfo=None)
        self._connect().execute(self._upsert, (key, json_text, stamp, stamp))

    def select(self, key: str) -> object:
        row = self._connect().execute(self._select, (key,)).fetchone()
        return None if row is None else row[0]

    def delete(self, key: str) -> None:
        self._connect().execute(self._delete, (key,))

    def create_table(self) -> None:
        connection = self._connect()
        # PostgreSQL DDL is transactional: all three or nothing.
        with connection.transaction():
            for statement in self._create:
                connection.execute(statement)

    def dropped(self, exc: Exception) -> bool:
        connection = self._connection
        return (
            isinstance(exc, self._psycopg.OperationalError)
            and connection is not None
            and (connection.closed or connection.broken)
        )

    def missing_table(self, exc: Exception) -> bool:
        return isinstance(exc, self._psycopg.errors.UndefinedTable)

    def describe(self, exc: Exception) -> str:
        # The server's own sentence, without the "LINE 1: …" excerpt of our statement; a
        # client-side failure (connecting) has no server sentence, only libpq's lines.
        if isinstance(exc, self._psycopg.Error) and exc.diag.message_primary:
            return exc.diag.message_primary
        return " ".join(str(exc).split())

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


_Backend = _SqliteBackend | _PostgresBackend


def _scrub(message: str, password: str | None) -> str:
    """Remove the password from a driver's message, should the driver ever quote it."""
    return message.replace(password, "***") if password else message


def _sqlite_path(url: str) -> str:
    parts = urlsplit(url)
    if parts.netloc or parts.query or parts.fragment or not parts.path:
        raise ConfigurationError(f"payload store url must be {URL_FORMS}, not {url!r}")
    path = unquote(parts.path)
    if path.startswith("//"):  # sqlite:////abs/file.db (SQLAlchemy's spelling) is /abs/file.db
        path = "/" + path.lstrip("/")
    if path == ":memory:" or path.endswith("/"):
        # An in-memory database is private to one connection: Ruby would never see it.
        raise ConfigurationError(f"payload store url {url!r} does not name a database file")
    return path


class SqlPayloadStore(ThreadedPayloadStore):
    """Payloads as rows of the gem's ``patient_http_payloads`` table (``:active_record``).

    ``url`` is ``sqlite:///ABSOLUTE/PATH.db``, ``sqlite:RELATIVE/PATH.db`` (relative to the
    working directory, as Rails reads ``sqlite3:db/file.sqlite3``) or
    ``postgresql://user:password@host:port/database`` (``postgres://`` too; libpq query
    parameters such as ``sslmode`` pass through). Nothing connects until the first call; a
    PostgreSQL connection that drops is reopened once and the statement repeated (every
    statement here is idempotent). Every driver error is a :class:`PayloadStoreError`.
    """

    def __init__(self, url: str, *, table: str = DEFAULT_TABLE) -> None:
        if not isinstance(table, str) or not _IDENTIFIER.fullmatch(table):
            raise ConfigurationError(
                f"payload store table {table!r} is not an SQL identifier "
                "(letters, digits and _, not starting with a digit, at most 63 characters)"
            )
        scheme = urlsplit(url).scheme.lower() if isinstance(url, str) else ""
        self._backend: _Backend
        if scheme in _SQLITE_SCHEMES:
            path = _sqlite_path(url)
            self._backend = _SqliteBackend(path, table)
            self._password: str | None = None
            self._where = f"sqlite:{path} table {table}"
        elif scheme in _POSTGRES_SCHEMES:
            self._backend = _PostgresBackend(url, table)
            self._password = self._backend.password
            self._where = f"{hide_password(url)} table {table}"
        else:
            shown = hide_password(url) if isinstance(url, str) else repr(url)
            raise ConfigurationError(f"payload store url must be {URL_FORMS}, not {shown!r}")
        self._table = table
        self._lock = threading.Lock()

    @property
    def table(self) -> str:
        """The table the rows live in."""
        return self._table

    def __repr__(self) -> str:
        return f"SqlPayloadStore({self._where})"  # never the password

    # --- synchronous API (the enqueue client, tests) ---

    def put_sync(self, key: str, json_text: str) -> None:
        """:meth:`put` in the calling thread."""
        _check_text(key, "payload key")
        _check_text(json_text, f"payload for {self._shown(key)}")
        now = datetime.now(UTC)  # one instant for both columns, as the gem's Time.current
        self._run("store", key, lambda backend: backend.upsert(key, json_text, now))

    def get_sync(self, key: str) -> str | None:
        """:meth:`get` in the calling thread."""
        _check_text(key, "payload key")
        data = self._run("read", key, lambda backend: backend.select(key))
        if data is None or isinstance(data, str):
            return data
        if isinstance(data, bytes):  # SQLite keeps whatever type was written: a BLOB
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise PayloadStoreError(
                    f"stored payload {self._shown(key)} in {self._where} is not valid UTF-8: {exc}"
                ) from exc
        raise PayloadStoreError(
            f"stored payload {self._shown(key)} in {self._where} is a "
            f"{type(data).__name__}, not text"
        )

    def delete_sync(self, key: str) -> None:
        """:meth:`delete` in the calling thread."""
        _check_text(key, "payload key")
        self._run("delete", key, lambda backend: backend.delete(key))

    def create_table_sync(self) -> None:
        """Create the table and its two indexes as the gem's migration does, if missing."""
        self._run("create the table", None, lambda backend: backend.create_table())

    def close(self) -> None:
        """Close the connection; a later call opens a new one."""
        with self._lock:
            self._discard()

    # --- internals ---

    def _shown(self, key: str) -> str:
        shown = key if len(key) <= _KEY_SHOWN else f"{key[:_KEY_SHOWN]}…"
        return repr(shown)

    def _run(self, action: str, key: str | None, call: Callable[[_Backend], _T]) -> _T:
        backend = self._backend
        with self._lock:
            for attempt in (1, 2):
                reused = backend.connected
                try:
                    return call(backend)
                except backend.errors as exc:
                    # Only a connection that worked before and broke since is worth one more
                    # try; a fresh one that fails would fail again.
                    if attempt == 1 and reused and backend.dropped(exc):
                        self._discard()
                        continue
                    raise self._error(action, key, exc) from exc
            raise AssertionError("unreachable")  # pragma: no cover

    def _discard(self) -> None:
        # A broken connection may fail to close cleanly; it is dropped either way.
        with contextlib.suppress(*self._backend.errors):
            self._backend.close()

    def _error(self, action: str, key: str | None, exc: Exception) -> PayloadStoreError:
        what = f"{action} payload {self._shown(key)}" if key is not None else action
        detail = _scrub(self._backend.describe(exc), self._password) or type(exc).__name__
        hint = ""
        if self._backend.missing_table(exc):
            hint = (
                " (create it with the gem's migration, rails patient_http:install:migrations, "
                "or SqlPayloadStore.create_table_sync())"
            )
        return PayloadStoreError(f"cannot {what} in {self._where}: {detail}{hint}")
