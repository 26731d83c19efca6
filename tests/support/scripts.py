"""What a user runs from a shell, as real processes: scripts/run, the console script, an app.

:func:`started` runs a command in a given directory with its output in files and kills it at
the end whatever happened; :func:`user_environ` is this environment without any worker setting
(so nothing of the caller's Redis or options leaks in); :func:`stop_embedded_redis` kills what
a killed scripts/run left; :func:`json_api` is a threaded HTTP
server answering JSON, for processes to call (a trio server would need the test's loop).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support import waiting

WORKER_SETTINGS = ("REDIS_URL", "REDIS_PROVIDER", "PATIENT_SIDEKIQ_CHILD_INDEX", "NOTIFY_SOCKET")


def user_environ(**extra: str) -> dict[str, str]:
    """This environment without the worker's settings, plus ``extra``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PATIENT_HTTP_", "PATIENT_SIDEKIQ_RUN_"))
        and name not in WORKER_SETTINGS
        and name != "PYTHONPATH"
    }
    return env | extra


@dataclass
class Proc:
    """A started process whose output goes to files (a pipe nobody reads could fill)."""

    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def signal(self, number: int) -> None:
        self.process.send_signal(number)

    def wait(self, seconds: float = 30) -> int:
        try:
            return self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {seconds} s{self.tail()}") from None

    def tail(self) -> str:
        return (
            "\n--- stdout (last lines) ---\n" + "\n".join(self.stdout.splitlines()[-15:])
            + "\n--- stderr (last lines) ---\n" + "\n".join(self.stderr.splitlines()[-30:])
        )  # fmt: skip

    def wait_for(self, check: Any, what: str, seconds: float = 30) -> Any:
        """Poll ``check``; fail at once, with the output's tail, if the process ended."""
        return waiting.wait_for(check, what, seconds, process=self.process, detail=self.tail)


@contextmanager
def started(argv: list[str], cwd: Path, env: dict[str, str], logs: Path) -> Iterator[Proc]:
    """Run ``argv`` in ``cwd``, output under ``logs``; killed and reaped at the end."""
    logs.mkdir(parents=True, exist_ok=True)
    stdout_path, stderr_path = logs / "stdout.log", logs / "stderr.log"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        # Its own process group: killing a script must not leave its worker running.
        process = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            start_new_session=True,
        )  # fmt: skip
    proc = Proc(process, stdout_path, stderr_path)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def stop_embedded_redis(run_dir: Path) -> None:
    """Kill the redis-server a scripts/run with ``PATIENT_SIDEKIQ_RUN_DIR=run_dir`` left behind
    (it runs in its own session, so killing the script's process group spares it)."""
    try:
        pid = int((run_dir / "redis" / "pid").read_text())
        with open(f"/proc/{pid}/comm", encoding="utf-8") as comm:
            if comm.read().startswith("redis-server"):
                os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass  # nothing left, or not ours any more


def run(argv: list[str], cwd: Path, env: dict[str, str], logs: Path, seconds: float = 60) -> Proc:
    """Run ``argv`` in ``cwd`` to its end, output under ``logs``."""
    with started(argv, cwd, env, logs) as proc:
        proc.wait(seconds)
    return proc


@dataclass
class JsonApi:
    """A threaded HTTP/1.1 server answering every GET with ``{"path": ..., "ok": true}``."""

    server: ThreadingHTTPServer
    paths: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"


@contextmanager
def json_api(*, delay: float = 0.0, hold: threading.Event | None = None) -> Iterator[JsonApi]:
    """Answers after ``delay`` seconds, or once ``hold`` is set (set at the end, whatever
    happened): a slow API, or requests kept in flight as long as a test needs."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            if hold is not None:
                hold.wait(30)
            elif delay:
                time.sleep(delay)
            body = json.dumps({"path": self.path, "ok": True}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep the test output quiet

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True  # a held answer must not keep the test process alive
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield JsonApi(server, seen)
    finally:
        if hold is not None:
            hold.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
