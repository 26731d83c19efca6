"""A real PostgreSQL server for the SQL payload store's tests, started once per session.

Registered with ``pytest_plugins = ["tests.support.postgres"]`` by the test modules that use
it. ``initdb`` makes a throw-away cluster in a temporary directory (trust authentication,
UTF-8, no fsync: nothing here must survive a crash), ``postgres`` serves it on a free
loopback port with its socket in the same directory, and ``pg_ctl stop -m immediate`` ends
it. PostgreSQL refuses to run as root, so under root both run as the ``postgres`` system
user, which owns the directory. Without the binaries, or as root without that user, the
tests that need the server skip, saying why; under ``CI`` they fail instead.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.support.programs import free_port

# Debian installs the server outside PATH; /usr/local/bin may hold symlinks to it.
_DEBIAN_BINDIRS = "/usr/lib/postgresql/*/bin"
_READY_SECONDS = 60.0
# POSIX form (5:45 east of UTC), so no time zone database is needed.
SERVER_TIME_ZONE = "<+0545>-05:45"


def _unavailable(reason: str) -> NoReturn:
    message = f"PostgreSQL test server unavailable: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def find_bindir() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres`` (``$PG_BINDIR`` first)."""
    candidates: list[Path] = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(Path(os.environ["PG_BINDIR"]))
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)

    def version(path: str) -> tuple[int, ...]:
        number = Path(path).parent.name
        return tuple(int(part) for part in number.split(".") if part.isdigit())

    candidates.extend(
        Path(p) for p in sorted(glob.glob(_DEBIAN_BINDIRS), key=version, reverse=True)
    )
    for candidate in candidates:
        if all((candidate / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return candidate
    return None


class PostgresServer:
    """One private PostgreSQL cluster; :meth:`new_database` gives each test its own database."""

    def __init__(self, bindir: Path, directory: Path, user: pwd.struct_passwd | None) -> None:
        self.bindir = bindir
        self.directory = directory
        self.data = directory / "data"
        self.log = directory / "postgres.log"
        self.port = free_port()
        self._user = user  # None: run as ourselves (not root)
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _as_owner(self) -> dict[str, Any]:
        """Popen arguments that drop root to the cluster's owner (nothing when not root)."""
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def _run(self, *command: str) -> None:
        result = subprocess.run(
            command,
            cwd=self.directory,  # the owner can enter it (root's cwd may be closed to it)
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            **self._as_owner(),
        )
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed ({result.returncode}):\n{result.stderr}")

    def start(self) -> None:
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data),
            "--auth=trust", "--username=postgres", "--encoding=UTF8", "--no-locale",
            "--no-sync",
        )  # fmt: skip
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    str(self.bindir / "postgres"), "-D", str(self.data),
                    "-p", str(self.port),
                    "-k", str(self.directory),
                    "-c", "listen_addresses=127.0.0.1",
                    "-c", "fsync=off",
                    "-c", "synchronous_commit=off",
                    "-c", "full_page_writes=off",
                    # Not UTC: a timestamp written in local time instead of UTC would show.
                    "-c", f"TimeZone={SERVER_TIME_ZONE}",
                ],
                cwd=self.directory,
                stdout=log,
                stderr=subprocess.STDOUT,
                **self._as_owner(),
            )  # fmt: skip
        self._wait_ready()

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + _READY_SECONDS
        while True:
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                assert self.process is not None
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = self.log.read_text(errors="replace")[-4000:]
                    raise RuntimeError(f"PostgreSQL did not start ({exc}):\n{log}") from exc
                time.sleep(0.05)  # poll again; the deadline bounds the wait

    def new_database(self) -> str:
        """Create an empty database and return its URL."""
        import psycopg

        name = f"test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self._run(str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data), "-m", "immediate")
            self.process.wait(timeout=30)
        except (RuntimeError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(timeout=30)


def _cluster_owner() -> pwd.struct_passwd | None:
    """Whom the server runs as: ourselves, or the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        _unavailable("running as root (which PostgreSQL refuses) and there is no 'postgres' user")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL for the whole session (skipped, or failed under CI, without one)."""
    try:
        import psycopg  # noqa: F401  (the tests talk to it through psycopg)
    except ImportError:
        _unavailable("psycopg is not installed (pip install -e '.[dev]')")
    bindir = find_bindir()
    if bindir is None:
        _unavailable("initdb/pg_ctl/postgres not found (apt-get install postgresql)")
    owner = _cluster_owner()
    directory = Path(tempfile.mkdtemp(prefix="patient-sidekiq-pg-"))
    if owner is not None:
        os.chown(directory, owner.pw_uid, owner.pw_gid)
    server = PostgresServer(bindir, directory, owner)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """URL of a fresh, empty database of the session's server."""
    return postgres_server.new_database()
