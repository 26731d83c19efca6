"""``status``, ``inflight`` and ``status --check`` against a real ``patient-sidekiq run``.

The worker runs as a process with a Python callback module (so it is two Sidekiq
identities), requests hang on a local server until the test lets them go; what the commands
print must name the processes as the worker's own log lines and the Busy page do.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from patient_sidekiq.cli.app import app
from patient_sidekiq.cli.status_report import CALLBACKS_ROLE, REQUESTS_ROLE
from patient_sidekiq.client.enqueue import Client
from patient_sidekiq.worker import runner as runner_module
from tests.support import waiting
from tests.support.programs import REPO, stop_process
from tests.support.scripts import json_api

pytestmark = pytest.mark.integration

cli = CliRunner()


@pytest.fixture
def held_api() -> Iterator[tuple[str, threading.Event]]:
    """A server whose answers wait for the returned event: requests stay in flight."""
    release = threading.Event()
    with json_api(hold=release) as api:
        yield api.url(""), release


@pytest.fixture
def worker(redis_url: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATIENT_HTTP_")}
    env.pop("REDIS_URL", None)
    env |= {"PYTHONPATH": str(REPO), "CLI_TEST_RECORD": str(tmp_path / "record.jsonl")}
    argv = [sys.executable, "-m", "patient_sidekiq", "run", "--redis-url", redis_url]
    argv += ["-r", "tests.support.cli_callbacks", "-c", "6", "--callback-concurrency", "3"]
    log = tmp_path / "worker.log"
    with log.open("wb") as err:
        process = subprocess.Popen(
            argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err
        )
    try:
        yield process, log
    finally:
        stop_process(process)


def invoke(*argv: str) -> Any:
    return cli.invoke(app, list(argv))


def test_status_inflight_and_check_name_the_processes_as_the_log_does(
    redis_url: str,
    redis_client: redis.Redis,
    held_api: tuple[str, threading.Event],
    worker: tuple[subprocess.Popen[bytes], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert (runner_module.REQUESTS_ROLE, runner_module.CALLBACKS_ROLE) == (
        REQUESTS_ROLE,
        CALLBACKS_ROLE,
    )  # the labels the worker writes are the ones status reads
    monkeypatch.setenv("REDIS_URL", redis_url)
    base, release = held_api
    process, log = worker

    def started() -> dict[str, str]:
        found = re.findall(r"patient-sidekiq (\S+) started \((\w+)\)", log.read_text())
        return {role: identity for identity, role in found} if len(found) == 2 else {}

    logged = waiting.wait_for(started, "both launchers", process=process, detail=log.read_text)
    with Client(redis_url) as client:
        ids = [
            client.get(f"{base}/held?token=s3cret&n={n}", callback="CliTest::Recorder")
            for n in range(2)
        ]
    waiting.wait_for(
        lambda: redis_client.zcard("sidekiq:patient_http:inflight_index") == 2,
        "two requests in flight",
        process=process,
        detail=log.read_text,
    )

    result = invoke("status", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rows = {p["role"]: p for p in report["processes"]}
    assert set(rows) == {"requests", "callbacks"}
    assert {role: row["identity"] for role, row in rows.items()} == logged
    assert rows["requests"]["http"]["inflight"] == 2
    assert rows["requests"]["http"]["capacity"] == 6
    assert rows["callbacks"]["http"] is None  # the in-flight figures only where they apply
    assert rows["callbacks"]["queues"] == ["patient_http_callbacks"]
    assert rows["callbacks"]["concurrency"] == 3
    assert rows["requests"]["labels"] == ["requests"]  # what the Busy page shows beside it
    assert report["live_workers"] == 2

    text = invoke("status")
    assert text.exit_code == 0
    for role, identity in logged.items():
        [line] = [line for line in text.stdout.splitlines() if line.startswith(identity)]
        assert line.split()[1] == role
    assert "2/6 (33.3%)" in text.stdout

    listed = invoke("inflight", "--json")
    assert listed.exit_code == 0
    entries = json.loads(listed.stdout)
    assert sorted(e["request_id"] for e in entries) == sorted(ids)
    assert {e["process_identity"] for e in entries} == {logged["requests"]}
    assert all(e["process_alive"] for e in entries)
    assert {e["url"] for e in entries} == {f"{base}/held?token=…&n=…"}
    table = invoke("inflight").stdout
    assert "s3cret" not in table
    assert table.count(logged["requests"]) == 2

    check = invoke("status", "--check")
    assert check.exit_code == 0, check.output
    assert check.stdout.startswith(
        f"ok: 2 live patient-sidekiq process(es) on {socket.gethostname()}"
    )
    assert logged["requests"] in check.stdout

    release.set()
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0, log.read_text()
    check = invoke("status", "--check")
    assert (check.exit_code, check.stdout) == (
        1,
        f"not ok: no live patient-sidekiq worker on {socket.gethostname()}\n",
    )
    assert invoke("status").exit_code == 1
    assert invoke("status", "--json").exit_code == 1
