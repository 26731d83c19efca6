"""``SqlPayloadStore`` against the REAL gem's ``ActiveRecordStore``, both ways, on SQLite and
PostgreSQL.

The Ruby side (``sql_store_peer.rb``) runs patient_http 1.3.0's
``PatientHttp::PayloadStore::ActiveRecordStore`` unmodified on Debian's ActiveRecord 6.1,
with a small shim for the two ActiveRecord 7.x APIs the store calls (the peer says which).
Ruby runs in a time zone that is not UTC and the PostgreSQL server has one too, so a
timestamp written in local time instead of UTC would show in ``older_than``.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from patient_sidekiq.wire.sql_store import DEFAULT_TABLE, SqlPayloadStore
from tests.interop.conftest import run_ruby_args
from tests.support.oracle import oracle_env, require_oracle

if TYPE_CHECKING:  # imported by pytest_plugins below: an earlier import defeats its rewriting
    from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.interop
pytest_plugins = ["tests.support.postgres"]

PEER = Path(__file__).with_name("sql_store_peer.rb")
# A POSIX zone 5:45 east of UTC (no tz database needed): local time is never UTC there.
RUBY_TZ = "NPT-5:45"
SQLITE_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{6})?$")


@dataclass
class Database:
    """One database both sides open: Ruby through ActiveRecord, Python through the store."""

    kind: str
    url: str  # SqlPayloadStore's URL
    ruby: dict[str, str]  # the peer's "database" (ActiveRecord's connection)

    def peer(self, *steps: dict[str, Any]) -> dict[str, Any]:
        """Run the real gem's store on this database; return the peer's answer."""
        env = oracle_env(require_oracle())
        env["TZ"] = RUBY_TZ
        answer: dict[str, Any] = run_ruby_args(
            [str(PEER)], {"database": self.ruby, "steps": list(steps)}, env
        )
        # The shims exist because Debian's ActiveRecord is 6.1; 7.2 would need none.
        if answer["activerecord"].startswith("6.1"):
            assert answer["shims"] == ["with_connection", "upsert(update_only:)"]
        else:
            assert answer["shims"] == []
        return answer

    def results(self, *steps: dict[str, Any]) -> list[Any]:
        results: list[Any] = self.peer(*steps)["results"]
        return results

    def raw_created_at(self, key: str) -> Any:
        """``created_at`` exactly as the driver returns it (SQLite: the stored text)."""
        if self.kind == "sqlite":
            with sqlite3.connect(self.ruby["database"]) as connection:
                row = connection.execute(
                    f'SELECT "created_at" FROM "{DEFAULT_TABLE}" WHERE "key" = ?', (key,)
                ).fetchone()
            connection.close()
        else:
            with psycopg.connect(self.url) as pg:
                row = pg.execute(
                    'SELECT "created_at" FROM "patient_http_payloads" WHERE "key" = %s', (key,)
                ).fetchone()
        assert row is not None
        return row[0]


def _new_database(kind: str, directory: Path, request: pytest.FixtureRequest) -> Database:
    if kind == "sqlite":
        path = directory / f"app-{len(list(directory.iterdir()))}.sqlite3"
        return Database("sqlite", f"sqlite://{path}", {"adapter": "sqlite3", "database": str(path)})
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.new_database()
    return Database("postgresql", url, {"url": url})


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    require_oracle()
    return _new_database(request.param, tmp_path, request)


@pytest.fixture
def store(database: Database) -> Iterator[SqlPayloadStore]:
    payloads = SqlPayloadStore(database.url)
    yield payloads
    payloads.close()


def _instant(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def _as_utc(raw: Any) -> datetime:
    if isinstance(raw, str):  # SQLite
        return datetime.fromisoformat(raw).replace(tzinfo=UTC)
    assert isinstance(raw, datetime)
    assert raw.tzinfo is None
    return raw.replace(tzinfo=UTC)


def test_our_table_is_the_migrations_table(
    database: Database, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """create_table_sync makes what the gem's migration makes, as ActiveRecord sees it (and,
    on SQLite, the same CREATE statements)."""
    [ruby_made] = database.results({"op": "migrate"}, {"op": "schema"})[1:]
    ours = _new_database(database.kind, tmp_path, request)
    payloads = SqlPayloadStore(ours.url)
    payloads.create_table_sync()
    payloads.close()
    [ours_seen] = ours.results({"op": "schema"})
    assert ours_seen == ruby_made
    assert ruby_made["primary_key"] is None  # the migration has no id and no primary key
    assert [c["name"] for c in ruby_made["columns"]] == ["key", "data", "created_at", "updated_at"]
    if database.kind == "sqlite":

        def ddl(path: str) -> list[tuple[str, ...]]:
            with sqlite3.connect(path) as connection:
                rows = connection.execute(
                    "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = ? ORDER BY name",
                    (DEFAULT_TABLE,),
                ).fetchall()
            connection.close()
            return [tuple(row) for row in rows]

        assert ddl(ours.ruby["database"]) == ddl(database.ruby["database"])


async def test_ruby_stores_python_reads_overwrites_and_deletes(
    database: Database, store: SqlPayloadStore
) -> None:
    data = {"status": 200, "body": "é ✓ 日本 🎉", "ratio": 0.1, "list": [1, None, True]}
    migrate, stored, row, _, row_2 = database.results(
        {"op": "migrate"},
        {"op": "store", "key": "ruby-1", "data": data},
        {"op": "row", "key": "ruby-1"},
        {"op": "store", "key": "ruby-2", "data": {"n": 2}},
        {"op": "row", "key": "ruby-2"},
    )
    assert migrate is True
    assert stored["returned"] == "ruby-1"
    # Our get hands back the row's text, which is the text Ruby's JSON.generate made.
    assert await store.get("ruby-1") == row["data"] == stored["json"]
    assert json.loads(row["data"]) == data
    assert await store.get("ruby-2") == '{"n":2}'
    if database.kind == "sqlite":  # the text ActiveRecord wrote, as our format has it
        assert row["created_at_before_type_cast"] == database.raw_created_at("ruby-1")
        assert SQLITE_TIME.match(row["created_at_before_type_cast"])

    await store.put("ruby-2", '{"n": "python"}')  # our upsert on Ruby's row
    await store.delete("ruby-1")
    fetched, exists, after = database.results(
        {"op": "fetch", "key": "ruby-2"},
        {"op": "exists", "key": "ruby-1"},
        {"op": "row", "key": "ruby-2"},
    )
    assert fetched == {"n": "python"}
    assert exists is False
    assert after["data"] == '{"n": "python"}'
    assert after["created_at"] == row_2["created_at"]  # Ruby's, kept by our upsert
    assert _instant(after["updated_at"]) > _instant(row_2["updated_at"])


async def test_python_stores_ruby_reads_and_deletes(
    database: Database, store: SqlPayloadStore
) -> None:
    database.results({"op": "migrate"})
    text = '{"status": 201, "body": "é ✓ 𝄞", "headers": {"b": "1", "a": "2"}, "n": 1.5e3}'
    await store.put("py-1", text)
    await store.put("py-2", "[2]")
    await store.put("py-3", "[3]")
    created = _as_utc(database.raw_created_at("py-1"))

    fetched, exists, row, soon, at_created, deleted = database.results(
        {"op": "fetch", "key": "py-1"},
        {"op": "exists", "key": "py-1"},
        {"op": "row", "key": "py-1"},
        {"op": "older_than", "seconds_from_now": 1},
        {"op": "older_than", "at": created.isoformat()},
        {"op": "delete", "key": "py-2"},
    )
    assert fetched == json.loads(text)
    assert exists is True
    assert row["data"] == text
    # ActiveRecord reads our timestamps as the instants we wrote (UTC, microseconds).
    assert _instant(row["created_at"]) == created
    assert row["updated_at"] == row["created_at"]
    assert soon == ["py-1", "py-2", "py-3"]
    assert "py-1" not in at_created  # the scope is created_at < time, strictly
    assert deleted is True
    assert await store.get("py-2") is None

    await store.put("py-1", '{"second": true}')  # an existing key
    await store.delete("py-3")
    fetched, row, exists, soon = database.results(
        {"op": "fetch", "key": "py-1"},
        {"op": "row", "key": "py-1"},
        {"op": "exists", "key": "py-3"},
        {"op": "older_than", "seconds_from_now": 1},
    )
    assert fetched == {"second": True}
    assert _instant(row["created_at"]) == created  # kept by the upsert
    assert _instant(row["updated_at"]) > created
    assert exists is False
    assert soon == ["py-1"]
