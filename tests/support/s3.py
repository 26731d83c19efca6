"""A real S3-compatible server for the S3 payload store's tests: moto's, in a subprocess.

A subprocess rather than moto in this process: importing moto installs hooks into botocore,
and the store under test must talk plain HTTP to a separate server, as it would to S3.

Registered with ``pytest_plugins = ["tests.support.s3"]`` by the test modules that use it:

* ``s3_server`` (session): the running server, started once;
* ``s3_process_env``: an environment for other processes with only dummy AWS settings;
* ``s3_endpoint``: its URL, with dummy AWS credentials and region set in the environment
  (and every other source of AWS settings pointed away) so nothing can reach real AWS;
* ``s3_client``: a plain boto3 client on that server, for setup and checks;
* ``s3_bucket``: a fresh, empty bucket for the test.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.programs import free_port, stop_process

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"
START_TIMEOUT = 30.0
"""Seconds the server has to answer (it needs well under one; a loaded CI box, more)."""


def dummy_aws_environment(home: Path) -> dict[str, str]:
    """The AWS settings of every process in these tests: dummy keys, one region, no profile,
    no config files, no instance metadata (nothing that could find real credentials), and no
    proxy for the local server."""
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_CONFIG_FILE": str(home / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        # The server is local: an HTTP proxy configured on the machine must not be asked.
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


# Set elsewhere, these would change which credentials or endpoint a client uses.
UNSET_AWS_VARIABLES = (
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


class MotoServer:
    """``python -m moto.server`` on a free loopback port, stopped by :meth:`stop`."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        """This process's environment with only the dummy AWS settings, for subprocesses."""
        env = {key: value for key, value in os.environ.items() if key not in UNSET_AWS_VARIABLES}
        env.update(dummy_aws_environment(self.home))
        return env

    def start(self) -> None:
        # The server logs every request to stderr: to a file, which no reader has to drain.
        log = self.home / "moto.log"
        with log.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                env=self.environment(),
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if self.process.poll() is not None:
                error = log.read_text(errors="replace")
                raise RuntimeError(f"moto server exited ({self.process.returncode}):\n{error}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto server did not answer within {START_TIMEOUT}s")
            time.sleep(0.02)

    def _answers(self) -> bool:
        # moto's own API answers once the server is up, whatever the state of any bucket.
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with direct.open(f"{self.url}/moto-api/data.json", timeout=1) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self) -> None:
        stop_process(self.process)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One moto server for the whole session (each test gets buckets of its own)."""
    server = MotoServer(tmp_path_factory.mktemp("aws-home"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_process_env(s3_server: MotoServer) -> dict[str, str]:
    """The environment for a process (Ruby) that talks to the server: dummy AWS settings."""
    return s3_server.environment()


@pytest.fixture
def s3_endpoint(s3_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """The server's URL; this test's environment has dummy AWS credentials and region."""
    for name in UNSET_AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in dummy_aws_environment(s3_server.home).items():
        monkeypatch.setenv(name, value)
    return s3_server.url


def boto_client(endpoint: str) -> Any:
    """A plain boto3 S3 client on the server, for the tests' own setup and checks (never the
    one the store under test uses)."""
    # An optional extra, imported only when a test asks for a client; import_module because
    # boto3 has no type information (its module's attributes are Any to mypy).
    session = importlib.import_module("boto3.session")
    return session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


@pytest.fixture(scope="session")
def s3_admin(s3_server: MotoServer) -> Iterator[Any]:
    """One boto3 client on the server for the whole session, for the tests' setup and checks
    (it names its credentials and region itself, so it needs no environment)."""
    client = boto_client(s3_server.url)
    yield client
    client.close()


@pytest.fixture
def s3_client(s3_endpoint: str, s3_admin: Any) -> Any:
    """A plain boto3 client on the moto server (never the one a store under test uses)."""
    return s3_admin


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    """The name of a new, empty bucket on the moto server."""
    name = f"payloads-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name)
    return name
