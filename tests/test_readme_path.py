"""The README's quickstart, run as written: its shell blocks and Python files, in order.

A user's home is a temporary directory holding ``~/patient-sidekiq`` (a link to this
repository) and ``~/myproject``, so the blocks run verbatim with ``bash -c``. What differs from
a fresh machine: ``PATIENT_SIDEKIQ_RUN_PROBE_PORT`` stands in for 6379 and
``PATIENT_SIDEKIQ_RUN_DIR`` keeps ``.run`` out of the working tree (both documented), the
example API's URL points at a local server, and the enqueueing program gets the ``REDIS_URL``
scripts/run printed (on a fresh machine the embedded Redis is on 6379, the default).
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.programs import REPO, free_port, require_binary
from tests.support.scripts import (
    Proc,
    json_api,
    run,
    started,
    stop_embedded_redis,
    user_environ,
)

pytestmark = pytest.mark.integration

README = REPO / "README.md"


def fenced_blocks(text: str) -> list[str]:
    """The body of every fenced code block, in order."""
    return [match.group(1) for match in re.finditer(r"^```\w*\n(.*?)^```$", text, re.M | re.S)]


def block(blocks: list[str], line: str) -> str:
    """The one block with ``line`` among its lines."""
    [found] = [body for body in blocks if line in body.splitlines()]
    return found


def quickstart_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Five-minute quickstart")
    return fenced_blocks(text[start : text.index("\n## ", start + 1)])


def shell(line: str, cwd: Path, env: dict[str, str], logs: Path) -> Proc:
    return run(["bash", "-c", line], cwd, env, logs)


def embedded_url(state: Path) -> str | None:
    url = state / "redis" / "url"
    return url.read_text().strip() if url.exists() else None


def answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=2).ping())
    except redis.ConnectionError:
        return False


def members(url: str) -> set[bytes]:
    try:
        return redis.Redis.from_url(url).smembers("processes")  # type: ignore[return-value]
    except redis.ConnectionError:
        return set()


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    """scripts/run's directory (PATIENT_SIDEKIQ_RUN_DIR); its Redis never outlives the test."""
    state = tmp_path / "run-state"
    try:
        yield state
    finally:
        stop_embedded_redis(state)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "patient-sidekiq").symlink_to(REPO)
    (home / "myproject").mkdir()
    return home


def test_the_quickstart_runs_as_written(home: Path, state: Path, tmp_path: Path) -> None:
    require_binary("redis-server")
    blocks = quickstart_blocks()
    env = user_environ(
        HOME=str(home),
        PATIENT_SIDEKIQ_RUN_PROBE_PORT=str(free_port()),
        PATIENT_SIDEKIQ_RUN_DIR=str(state),
    )
    logs = tmp_path / "logs"

    # First terminal: `scripts/run`, a worker that keeps the embedded Redis up.
    assert "scripts/run\n" in blocks
    with started(["bash", "-c", "scripts/run"], REPO, env, logs / "worker") as worker:
        url = worker.wait_for(lambda: embedded_url(state), "the embedded Redis's URL file")
        worker.wait_for(lambda: members(url), "the worker to join")

        # Second terminal: the demo, then status and inflight, found with no setting.
        demo, status, inflight = block(blocks, "scripts/run demo").splitlines()
        ran = shell(demo, REPO, env, logs / "demo")
        assert ran.process.returncode == 0, ran.tail()
        assert "300/300 done" in ran.stdout
        assert "All callbacks ran." in ran.stdout
        assert "using the embedded redis-server another scripts/run started" in ran.stderr
        assert answers(url), "the demo's scripts/run stopped the Redis the worker still uses"

        ran = shell(status, REPO, env, logs / "status")
        assert ran.process.returncode == 0, ran.tail()
        assert "300" in ran.stdout  # the demo's requests, in the totals
        ran = shell(inflight, REPO, env, logs / "inflight")
        assert ran.process.returncode == 0, ran.tail()
        # The same commands' JSON, to check what they found without parsing tables.
        ran = shell(f"{status} --json", REPO, env, logs / "status-json")
        assert ran.process.returncode == 0, ran.tail()
        report = json.loads(ran.stdout)
        assert len(report["processes"]) == 1  # the first terminal's worker
        assert report["totals"]["requests"] == 300
        ran = shell(f"{inflight} --json", REPO, env, logs / "inflight-json")
        assert ran.process.returncode == 0, ran.tail()
        assert json.loads(ran.stdout) == []

        worker.process.send_signal(signal.SIGINT)  # Ctrl-C
        assert worker.wait() == 0, worker.tail()
    assert embedded_url(state) is None
    assert not answers(url), "the last scripts/run to exit stops the embedded Redis"

    # A pure-Python app: the callback module, the worker from the app's directory, enqueue.py.
    project = home / "myproject"
    callbacks = block(blocks, "# myapp/callbacks.py")
    (project / "myapp").mkdir()
    (project / "myapp" / "callbacks.py").write_text(callbacks)
    start_worker = block(blocks, "~/patient-sidekiq/scripts/run -r myapp.callbacks")
    assert start_worker.startswith("cd ~/myproject\n")
    with json_api() as api:
        enqueue = block(blocks, "# enqueue.py")
        assert "https://api.example.com/invoices/42" in enqueue
        (project / "enqueue.py").write_text(
            enqueue.replace("https://api.example.com/invoices/42", api.url("/invoices/42"))
        )
        # The worker's print() goes to a file here, not a terminal: unbuffered, to be seen.
        app_env = env | {"PYTHONUNBUFFERED": "1"}
        with started(
            ["bash", "-c", start_worker], tmp_path, app_env, logs / "app-worker"
        ) as app_worker:
            url = app_worker.wait_for(lambda: embedded_url(state), "the embedded Redis again")
            app_worker.wait_for(
                lambda: len(members(url)) == 2, "the HTTP and the callbacks launchers"
            )
            assert "python_callbacks=1" in app_worker.stderr

            commands = block(blocks, "~/patient-sidekiq/.venv/bin/python enqueue.py")
            assert commands.startswith("cd ~/myproject\n")
            ran = shell(commands, tmp_path, env | {"REDIS_URL": url}, logs / "enqueue")
            assert ran.process.returncode == 0, ran.tail()
            [request_id] = re.findall(r"^enqueued (\S+)$", ran.stdout, re.M)

            printed = "200 {'path': '/invoices/42', 'ok': True} 42"
            app_worker.wait_for(lambda: printed in app_worker.stdout, "the callback's print")
            assert api.paths == ["/invoices/42"]
            app_worker.process.send_signal(signal.SIGTERM)
            assert app_worker.wait() == 0, app_worker.tail()
    assert request_id
    assert embedded_url(state) is None
    assert "ModuleNotFoundError" not in app_worker.stderr
