"""The ``:active_record`` payload store (``SqlPayloadStore``) on a real SQLite file and a real
PostgreSQL server: rows read back with the drivers themselves, no mocks."""

from __future__ import annotations

import re
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
import trio
from psycopg import sql

from patient_sidekiq.errors import ConfigurationError, PayloadStoreError
from patient_sidekiq.wire.payload_store import PayloadStore
from patient_sidekiq.wire.sql_store import DEFAULT_TABLE, SqlPayloadStore
from tests.support.programs import free_port

pytest_plugins = ["tests.support.postgres"]

# The gem's keys are uuids; these are what a job could carry instead. All fit varchar(36).
HOSTILE_KEYS = [
    "x';DROP TABLE patient_http_payloads",
    "');DELETE FROM patient_http_payloads",
    '" OR "1"="1',
    "a' OR '1'='1' --",
    "%s %(key)s ? :1 $1",
    "\\'; \\\\",
]
# Text exactly as a writer made it: spacing, key order, number forms and escapes must survive.
ODD_JSON = '{"z": 1,  "a":[1.0, 2e3, -0.0],"s":"\\u00e9 \\" \\\\ \\u0000", "n" : null}'
NON_ASCII_JSON = '{"text":"é ✓ 日本語 עברית 𝄞 🎉","ключ":"значение"}'
# ActiveRecord's quoted_date on SQLite: seconds, then ".ffffff" only when the usec are not 0.
SQLITE_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{6})?$")


@dataclass
class Database:
    """One database under test: its URL, and the row as the driver itself reads it."""

    kind: str
    url: str

    def row(self, key: str, table: str = DEFAULT_TABLE) -> tuple[Any, ...] | None:
        """``(data, created_at, updated_at)`` straight from the driver (SQLite: raw text)."""
        if self.kind == "sqlite":
            with sqlite3.connect(self.url.removeprefix("sqlite://")) as connection:
                found = connection.execute(
                    f'SELECT "data", "created_at", "updated_at" FROM "{table}" WHERE "key" = ?',
                    (key,),
                ).fetchone()
                if found is not None:
                    kinds = connection.execute(
                        f'SELECT typeof("created_at"), typeof("updated_at") FROM "{table}" '
                        'WHERE "key" = ?',
                        (key,),
                    ).fetchone()
                    assert kinds == ("text", "text"), "SQLite timestamps must be text, as AR's"
            connection.close()
            return None if found is None else tuple(found)
        select = sql.SQL(
            'SELECT "data", "created_at", "updated_at" FROM {} WHERE "key" = %s'
        ).format(sql.Identifier(table))
        with psycopg.connect(self.url) as pg:
            return pg.execute(select, (key,)).fetchone()

    def tables(self) -> set[str]:
        if self.kind == "sqlite":
            with sqlite3.connect(self.url.removeprefix("sqlite://")) as connection:
                names = {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
            connection.close()
            return names
        with psycopg.connect(self.url) as pg:
            rows = pg.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        return {r[0] for r in rows}

    def created_updated(self, key: str) -> tuple[datetime, datetime]:
        """Both timestamps of a row as UTC instants."""
        found = self.row(key)
        assert found is not None
        created, updated = found[1], found[2]
        if self.kind == "sqlite":
            assert SQLITE_TIME.match(created), created
            assert SQLITE_TIME.match(updated), updated
            created, updated = datetime.fromisoformat(created), datetime.fromisoformat(updated)
        for value in (created, updated):
            assert isinstance(value, datetime)
            assert value.tzinfo is None  # UTC without a zone, as ActiveRecord writes it
        return created.replace(tzinfo=UTC), updated.replace(tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    if request.param == "sqlite":
        return Database("sqlite", f"sqlite://{tmp_path / 'payloads.db'}")
    return Database("postgresql", request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(database: Database) -> Iterator[SqlPayloadStore]:
    """A store on the database, its table created."""
    payloads = SqlPayloadStore(database.url)
    payloads.create_table_sync()
    yield payloads
    payloads.close()


def _later_than(moment: datetime) -> None:
    """Return once the clock has passed ``moment`` (timestamps have microseconds)."""
    while datetime.now(UTC) <= moment:
        pass


# --- what is stored ---


async def test_roundtrip_keeps_the_exact_text(database: Database, store: SqlPayloadStore) -> None:
    before = datetime.now(UTC)
    await store.put("k1", ODD_JSON)
    after = datetime.now(UTC)
    assert await store.get("k1") == ODD_JSON
    found = database.row("k1")
    assert found is not None
    assert found[0] == ODD_JSON
    created, updated = database.created_updated("k1")
    assert created == updated  # one instant for both, as the gem's Time.current
    assert before <= created <= after


def test_sync_methods_share_the_rows(database: Database, store: SqlPayloadStore) -> None:
    store.put_sync("k1", "[1]")
    assert store.get_sync("k1") == "[1]"
    store.delete_sync("k1")
    assert store.get_sync("k1") is None
    assert database.row("k1") is None


async def test_upsert_keeps_created_at_and_moves_updated_at(
    database: Database, store: SqlPayloadStore
) -> None:
    await store.put("k1", '{"v":1}')
    created, updated = database.created_updated("k1")
    _later_than(updated)
    await store.put("k1", '{"v":2}')
    assert await store.get("k1") == '{"v":2}'
    created_again, updated_again = database.created_updated("k1")
    assert created_again == created
    assert updated_again > updated


async def test_missing_key_is_none_and_delete_is_idempotent(store: SqlPayloadStore) -> None:
    assert await store.get("nope") is None
    await store.delete("nope")
    await store.put("k1", "{}")
    await store.put("k2", "[]")
    await store.delete("k1")
    await store.delete("k1")
    assert await store.get("k1") is None
    assert await store.get("k2") == "[]"  # only the row asked for


async def test_non_ascii_text(database: Database, store: SqlPayloadStore) -> None:
    await store.put("k1", NON_ASCII_JSON)
    assert await store.get("k1") == NON_ASCII_JSON
    found = database.row("k1")
    assert found is not None
    assert found[0] == NON_ASCII_JSON


@pytest.mark.parametrize("key", HOSTILE_KEYS)
async def test_hostile_keys_are_only_data(
    database: Database, store: SqlPayloadStore, key: str
) -> None:
    assert len(key) <= 36  # the column's length (a longer key: the next test)
    await store.put("bystander", "[0]")
    await store.put(key, '{"hostile":true}')
    assert await store.get(key) == '{"hostile":true}'
    found = database.row(key)
    assert found is not None
    assert found[0] == '{"hostile":true}'
    await store.delete(key)
    assert await store.get(key) is None
    assert await store.get("bystander") == "[0]"
    assert DEFAULT_TABLE in database.tables()


async def test_key_longer_than_the_column(database: Database, store: SqlPayloadStore) -> None:
    """varchar(36) as the gem's migration declares: PostgreSQL refuses a longer key (an
    error, not a silent cut), SQLite ignores declared lengths as it does for ActiveRecord."""
    key = "k" * 37
    assert await store.get(key) is None
    await store.delete(key)
    if database.kind == "postgresql":
        with pytest.raises(PayloadStoreError, match="too long"):
            await store.put(key, "{}")
    else:
        await store.put(key, "{}")
        assert await store.get(key) == "{}"


async def test_text_that_is_not_utf8_is_refused(store: SqlPayloadStore) -> None:
    with pytest.raises(PayloadStoreError, match="UTF-8"):
        await store.put("k1", '{"a":"\ud800"}')
    with pytest.raises(PayloadStoreError, match="UTF-8"):
        await store.get("\udfff")
    assert await store.get("k1") is None


async def test_concurrent_calls_from_many_tasks(store: SqlPayloadStore) -> None:
    results: dict[int, str | None] = {}

    async def one(n: int) -> None:
        await store.put(f"k{n}", f'{{"n":{n}}}')
        results[n] = await store.get(f"k{n}")
        await store.delete(f"k{n}")

    async with trio.open_nursery() as nursery:
        for n in range(30):
            nursery.start_soon(one, n)
    assert results == {n: f'{{"n":{n}}}' for n in range(30)}


def test_is_a_payload_store(store: SqlPayloadStore) -> None:
    typed: PayloadStore = store  # the worker's protocol (mypy checks this line)
    assert typed is store
    assert store.table == DEFAULT_TABLE


# --- the table ---


def test_create_table_is_idempotent_and_keeps_rows(
    database: Database, store: SqlPayloadStore
) -> None:
    store.put_sync("k1", "{}")
    store.create_table_sync()
    assert store.get_sync("k1") == "{}"


def test_another_table(database: Database) -> None:
    payloads = SqlPayloadStore(database.url, table="Other_Payloads_2")
    try:
        payloads.create_table_sync()
        payloads.put_sync("k1", "{}")
        assert database.row("k1", table="Other_Payloads_2") is not None
        assert DEFAULT_TABLE not in database.tables()
    finally:
        payloads.close()


async def test_missing_table_says_how_to_create_it(database: Database) -> None:
    payloads = SqlPayloadStore(database.url)
    try:
        with pytest.raises(PayloadStoreError, match="create_table_sync") as raised:
            await payloads.get("k1")
        assert DEFAULT_TABLE in str(raised.value)
        assert "LINE 1" not in str(raised.value)  # the server's sentence, not our SQL
    finally:
        payloads.close()


def test_close_then_use_reopens(store: SqlPayloadStore) -> None:
    store.put_sync("k1", "{}")
    store.close()
    store.close()
    assert store.get_sync("k1") == "{}"


# --- connections ---


async def test_dropped_postgresql_connection_is_reopened(postgres_url: str) -> None:
    payloads = SqlPayloadStore(postgres_url)
    try:
        payloads.create_table_sync()
        await payloads.put("k1", "{}")
        for _ in range(2):  # every drop is survived, not only the first
            with psycopg.connect(postgres_url, autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchall()
            assert killed == [(True,)]
            assert await payloads.get("k1") == "{}"
    finally:
        payloads.close()


async def test_unreachable_postgresql_is_a_store_error_without_the_password() -> None:
    url = f"postgresql://payloads:s3cret-pw@127.0.0.1:{free_port()}/app?connect_timeout=5"
    payloads = SqlPayloadStore(url)
    calls: list[Callable[[], Awaitable[object]]] = [
        partial(payloads.get, "k1"),
        partial(payloads.put, "k1", "{}"),
        partial(payloads.delete, "k1"),
    ]
    for call in calls:
        with pytest.raises(PayloadStoreError, match=r"127\.0\.0\.1") as raised:
            await call()
        assert "s3cret-pw" not in str(raised.value)
        assert "payloads:***@" in str(raised.value)
    with pytest.raises(PayloadStoreError):
        payloads.put_sync("k1", "{}")
    assert "s3cret-pw" not in repr(payloads)
    payloads.close()


async def test_unopenable_sqlite_file_is_a_store_error(tmp_path: Path) -> None:
    payloads = SqlPayloadStore(f"sqlite://{tmp_path / 'missing-dir' / 'x.db'}")
    with pytest.raises(PayloadStoreError, match="unable to open"):
        await payloads.get("k1")
    payloads.close()


# --- configuration ---


def test_sqlite_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = tmp_path / "a b.db"
    for url in (
        f"sqlite://{absolute}",
        f"sqlite://{quote(str(absolute))}",
        f"sqlite3://{absolute}",
    ):
        payloads = SqlPayloadStore(url)
        payloads.create_table_sync()
        payloads.close()
    assert absolute.is_file()
    monkeypatch.chdir(tmp_path)
    relative = SqlPayloadStore("sqlite:rel/../relative.db")  # as Rails reads sqlite3:db/x
    relative.create_table_sync()
    relative.close()
    assert (tmp_path / "relative.db").is_file()


@pytest.mark.parametrize(
    "url",
    [
        "",
        "payloads.db",
        "mysql://app:s3cret-pw@db/app",
        "redis://127.0.0.1:6379/0",
        "https://db.example/app",
        "sqlite://host/x.db",  # a host means nothing to SQLite
        "sqlite:///x.db?mode=ro",
        "sqlite::memory:",  # private to one connection: Ruby could never read it
        "sqlite:///tmp/",
    ],
)
def test_bad_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"sqlite:///|database file") as raised:
        SqlPayloadStore(url)
    assert "s3cret-pw" not in str(raised.value)


@pytest.mark.parametrize(
    "table", ["", "1payloads", "pay-loads", 'x"; DROP TABLE y; --', "a.b", "é", "t" * 64]
)
def test_table_must_be_an_identifier(table: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not an SQL identifier"):
        SqlPayloadStore(f"sqlite://{tmp_path / 'x.db'}", table=table)


def test_postgres_scheme_and_no_connection_until_used() -> None:
    for scheme in ("postgres", "postgresql", "POSTGRESQL"):
        payloads = SqlPayloadStore(f"{scheme}://nobody@127.0.0.1:{free_port()}/app")
        payloads.close()  # nothing was opened, nothing fails


def test_missing_psycopg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # An uninstalled optional package: its import fails, as it would without the extra.
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'patient-sidekiq\[postgresql\]'"):
        SqlPayloadStore("postgresql://app@127.0.0.1/app")


def test_unparsable_postgresql_url_keeps_the_password_out() -> None:
    with pytest.raises(ConfigurationError, match="not a PostgreSQL URL") as raised:
        SqlPayloadStore("postgresql://app:s3cret-pw@127.0.0.1:5432/app?bogus_option=1")
    assert "s3cret-pw" not in str(raised.value)


def test_postgresql_server_time_zone_is_not_utc(postgres_url: str) -> None:
    """The test server runs in +05:45, so the UTC checks above mean something."""
    with psycopg.connect(postgres_url) as connection:
        row = connection.execute("SELECT now()::timestamp - (now() AT TIME ZONE 'UTC')").fetchone()
    assert row is not None
    assert row[0].total_seconds() == 5 * 3600 + 45 * 60


async def test_nul_in_a_key_never_escapes_as_a_driver_error(
    database: Database, store: SqlPayloadStore
) -> None:
    """PostgreSQL text cannot hold NUL; SQLite can. Either way the caller sees the store's
    own answer or a PayloadStoreError, never a driver exception."""
    if database.kind == "postgresql":
        with pytest.raises(PayloadStoreError, match="NUL"):
            await store.get("a\0b")
        with pytest.raises(PayloadStoreError, match="NUL"):
            await store.delete("a\0b")
    else:
        assert await store.get("a\0b") is None
        await store.put("a\0b", "[]")
        assert await store.get("a\0b") == "[]"
        assert await store.get("a") is None
