"""``patient-sidekiq run`` (and ``demo``, ``scripts/run``) as real processes.

Each test starts ``python -m patient_sidekiq`` against the session's redis-server and a small
threaded HTTP server, waits for what it expects by polling Redis or files with a deadline, and
signals the process as an operator (or Sidekiq's Web UI) would. Every process is killed and
reaped in ``finally``, whatever happened.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from patient_sidekiq import __version__
from patient_sidekiq.client.enqueue import Client
from tests.support import scripts, waiting
from tests.support.programs import REPO, free_port, require_binary
from tests.support.scripts import JsonApi, Proc, json_api, stop_embedded_redis

pytestmark = pytest.mark.integration

CALLBACK_WORKER = "PatientHttp::Sidekiq::CallbackWorker"
# Short intervals so a process is fully up (and gone) quickly.
FAST = ["--heartbeat-interval", "1", "--orphan-threshold", "5", "-t", "5"]


# --- a local JSON API ---

Api = JsonApi  # the name the other CLI tests import


@pytest.fixture
def api() -> Iterator[Api]:
    with json_api() as server:
        yield server


# --- processes ---


def clean_environ(**extra: str) -> dict[str, str]:
    """This environment without any worker setting of the caller, plus ``extra``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("PATIENT_HTTP_")
        and name not in ("REDIS_URL", "REDIS_PROVIDER", "PATIENT_SIDEKIQ_CHILD_INDEX")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env | extra


@contextmanager
def started(argv: list[str], tmp_path: Path, env: dict[str, str]) -> Iterator[Proc]:
    """Run ``argv`` in the repository; kill and reap it at the end, whatever happened."""
    with scripts.started(argv, REPO, env, tmp_path) as proc:
        yield proc


@contextmanager
def worker(redis_url: str, tmp_path: Path, *args: str, **env: str) -> Iterator[Proc]:
    """``python -m patient_sidekiq run`` against ``redis_url`` with short intervals."""
    argv = [sys.executable, "-m", "patient_sidekiq", "run", "--redis-url", redis_url, *FAST]
    with started([*argv, *args], tmp_path / "worker", clean_environ(**env)) as proc:
        yield proc


def wait_for(
    check: Callable[[], Any], what: str, proc: Proc | None = None, seconds: float = 10
) -> Any:
    """:func:`tests.support.waiting.wait_for` on ``proc``: fails at once when it ended, showing
    the last lines of its stderr."""
    if proc is None:
        return waiting.wait_for(check, what, seconds)
    return waiting.wait_for(check, what, seconds, process=proc.process, detail=proc.tail)


def processes(client: redis.Redis) -> set[str]:
    members: set[bytes] = client.smembers("processes")  # type: ignore[assignment]
    return {member.decode() for member in members}


def queue(client: redis.Redis, name: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in reversed(client.lrange(f"queue:{name}", 0, -1))]


def gone(pid: int) -> bool:
    """Whether ``pid`` no longer runs (a zombie has ended too)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


# --- run ---


def test_runs_a_ruby_request_job_logs_a_banner_and_stops_on_term(
    redis_url: str, redis_client: redis.Redis, api: Api, tmp_path: Path
) -> None:
    key = "very-secret-cli-key"
    args = ["--encryption-key", key, "-c", "12", "-g", "cli", "--log-level", "debug"]
    with worker(redis_url, tmp_path, *args) as proc:
        [identity] = wait_for(lambda: processes(redis_client), "the process to join", proc)
        with Client(redis_url, encryption_key=key) as client:
            request_id = client.get(
                api.url("/ruby"), callback="MyApp::DoneCallback", callback_args={"n": 1}
            )
        [job] = wait_for(lambda: queue(redis_client, "default"), "the callback job", proc)
        assert job["class"] == CALLBACK_WORKER
        assert job["queue"] == "default"
        assert api.paths == ["/ruby"]
        assert redis_client.llen("queue:patient_http") == 0
        info = json.loads(redis_client.hget(identity, "info") or b"{}")
        assert (info["concurrency"], info["tag"]) == (12, "cli")

        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.tail()
    assert processes(redis_client) == set()
    # Like Sidekiq, leaving removes the process from the set; its hash simply expires.
    assert not redis_client.exists(f"{identity}:work")
    log = proc.stderr
    [banner] = [line for line in log.splitlines() if f"patient-sidekiq {__version__} pid=" in line]
    assert f"pid={proc.process.pid}" in banner
    assert "127.0.0.1" in banner
    assert "queues=[patient_http]" in banner
    assert "max_connections=12" in banner
    assert "encryption=on (1 key)" in banner
    assert key not in log
    assert request_id not in banner


def test_banner_says_encryption_off_without_a_key(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with worker(redis_url, tmp_path, "-q", "first,2", "-q", "second") as proc:
        wait_for(lambda: processes(redis_client), "the process to join", proc)
        proc.signal(signal.SIGINT)
        assert proc.wait() == 0, proc.tail()
    banner = next(
        line for line in proc.stderr.splitlines() if " pid=" in line and "queues=" in line
    )
    assert "encryption=off" in banner
    assert "queues=[first,2, second]" in banner


def test_tstp_quiets_then_term_stops(
    redis_url: str, redis_client: redis.Redis, api: Api, tmp_path: Path
) -> None:
    with worker(redis_url, tmp_path) as proc:
        [identity] = wait_for(lambda: processes(redis_client), "the process to join", proc)
        assert redis_client.hget(identity, "quiet") == b"false"
        proc.signal(signal.SIGTSTP)
        wait_for(lambda: "quieting" in proc.stderr, "the quiet log line", proc)
        with Client(redis_url) as client:
            client.get(api.url("/after-quiet"), callback="MyApp::DoneCallback")
        # Quieting beats at once, so the hash shows it without waiting for the next beat.
        wait_for(
            lambda: redis_client.hget(identity, "quiet") == b"true",
            "quiet=true in the process hash",
            proc,
            seconds=5,
        )
        # A blocking fetch already waiting when TSTP came may take the job; it hands it
        # straight back (as Sidekiq requeues a job fetched while quiet).
        wait_for(
            lambda: redis_client.llen("queue:patient_http") == 1,
            "the job back on its queue",
            proc,
            seconds=5,
        )
        assert proc.process.poll() is None  # TSTP quiets; it does not stop the process
        assert api.paths == []
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.tail()
    assert processes(redis_client) == set()
    assert redis_client.llen("queue:patient_http") == 1


def test_python_callbacks_run_in_a_second_sidekiq_process(
    redis_url: str, redis_client: redis.Redis, api: Api, tmp_path: Path
) -> None:
    record = tmp_path / "record.jsonl"
    with worker(
        redis_url, tmp_path, "-r", "tests.support.cli_callbacks", CLI_TEST_RECORD=str(record)
    ) as proc:
        members = wait_for(
            lambda: len(processes(redis_client)) == 2 and processes(redis_client),
            "the HTTP and the callbacks launchers to join",
            proc,
        )
        queues = sorted(
            tuple(json.loads(redis_client.hget(member, "info") or b"{}")["queues"])
            for member in members
        )
        assert queues == [("patient_http",), ("patient_http_callbacks",)]
        with Client(redis_url) as client:
            request_id = client.get(
                api.url("/py"), callback="CliTest::Recorder", callback_args={"k": "v", "n": 2}
            )
        wait_for(
            lambda: record.exists() and '"callback"' in record.read_text(),
            "the Python callback",
            proc,
        )
        assert queue(redis_client, "default") == []  # nothing for Ruby
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.tail()
    assert processes(redis_client) == set()
    entries = [json.loads(line) for line in record.read_text().splitlines()]
    assert entries == [
        {"hook": "after_completion", "request_id": request_id},
        {
            "callback": "on_complete",
            "status": 200,
            "json": {"path": "/py", "ok": True},
            "request_id": request_id,
            "callback_args": {"k": "v", "n": 2},
        },
    ]
    assert "python_callbacks=1" in proc.stderr


def test_json_log_format_writes_only_json_lines(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with worker(redis_url, tmp_path, "--log-format", "json", "--log-level", "debug") as proc:
        wait_for(lambda: processes(redis_client), "the process to join", proc)
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.tail()
    lines = proc.stderr.splitlines()
    assert lines
    entries = [json.loads(line) for line in lines]
    assert all({"ts", "pid", "level", "logger", "msg"} <= entry.keys() for entry in entries)
    assert any(f"patient-sidekiq {__version__} pid=" in entry["msg"] for entry in entries)


def test_processes_2_runs_two_workers_and_term_stops_all(
    redis_url: str, redis_client: redis.Redis, api: Api, tmp_path: Path
) -> None:
    with worker(redis_url, tmp_path, "--processes", "2") as proc:
        members = wait_for(
            lambda: len(processes(redis_client)) == 2 and processes(redis_client),
            "two worker processes",
            proc,
            seconds=20,
        )
        pids = {json.loads(redis_client.hget(m, "info") or b"{}")["pid"] for m in members}
        assert len(pids) == 2
        assert proc.process.pid not in pids
        with Client(redis_url) as client:
            client.get(api.url("/swarm"), callback="MyApp::DoneCallback")
        wait_for(lambda: queue(redis_client, "default"), "the callback job", proc)
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.tail()
    assert all(gone(pid) for pid in pids)
    assert processes(redis_client) == set()


def test_a_configuration_error_exits_78_without_a_traceback(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "patient_sidekiq", "run", "-c", "0", "--protocol", "h3"]
    with started(argv, tmp_path, clean_environ(PATIENT_HTTP_RETRIES="-1")) as proc:
        assert proc.wait() == 78
    lines = proc.stderr.splitlines()
    assert len(lines) == 3, lines
    assert all(line.startswith("patient-sidekiq: ") for line in lines)
    assert "Traceback" not in proc.stderr


def test_a_secret_whose_variable_is_missing_exits_78_before_redis(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "patient_sidekiq", "run", "--redis-url", "redis://127.0.0.1:1/0"]
    argv += ["--secret", "openai=env:PATIENT_SIDEKIQ_TEST_MISSING_KEY"]
    with started(argv, tmp_path, clean_environ()) as proc:
        assert proc.wait() == 78  # not 69: Redis was never asked
    assert proc.stderr.strip() == (
        "patient-sidekiq: secret 'openai': environment variable "
        "PATIENT_SIDEKIQ_TEST_MISSING_KEY is not set"
    )


def test_a_configuration_error_under_the_supervisor_exits_78(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "patient_sidekiq", "run", "--processes", "2"]
    argv += ["-r", "no_such_module_for_cli_run_tests"]
    with started(argv, tmp_path, clean_environ()) as proc:
        assert proc.wait(20) == 78, proc.tail()
    assert "Traceback" not in proc.stderr
    assert "cannot load 'no_such_module_for_cli_run_tests'" in proc.stderr


def test_redis_not_answering_at_start_exits_69(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "patient_sidekiq", "run"]
    argv += ["--redis-url", f"redis://:hunter2@127.0.0.1:{free_port()}/0"]
    with started(argv, tmp_path, clean_environ()) as proc:
        assert proc.wait(30) == 69, proc.tail()
    assert "Traceback" not in proc.stderr
    [failure] = [line for line in proc.stderr.splitlines() if line.startswith("patient-sidekiq:")]
    assert "cannot reach Redis at redis://:***@127.0.0.1:" in failure
    assert "hunter2" not in proc.stderr
    assert " started" not in proc.stderr


# --- demo ---


def test_demo_runs_every_callback(redis_url: str, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "patient_sidekiq", "demo", "-n", "50", "--redis-url", redis_url]
    with started(argv, tmp_path, clean_environ()) as proc:
        assert proc.wait(60) == 0, proc.tail()
    assert "All callbacks ran." in proc.stdout
    assert "50/50 done" in proc.stdout


# --- scripts/run ---


def test_scripts_run_with_redis_url_stops_on_term(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    env = clean_environ(REDIS_URL=redis_url)
    with started([str(REPO / "scripts" / "run"), *FAST], tmp_path, env) as proc:
        wait_for(lambda: processes(redis_client), "the worker to join", proc, seconds=30)
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.tail()
    assert processes(redis_client) == set()
    assert f"scripts/run: REDIS_URL={redis_url}" in proc.stderr


def test_scripts_run_starts_a_private_redis_when_none_answers(tmp_path: Path) -> None:
    require_binary("redis-server")
    state = tmp_path / "state"
    # Nothing listens on this port (6379's stand-in): the script starts redis-server on it.
    probe = free_port()
    env = clean_environ(
        PATIENT_SIDEKIQ_RUN_PROBE_PORT=str(probe), PATIENT_SIDEKIQ_RUN_DIR=str(state)
    )
    private: redis.Redis | None = None
    try:
        with started([str(REPO / "scripts" / "run"), *FAST], tmp_path / "run", env) as proc:
            port = wait_for(
                lambda: (
                    (state / "redis" / "port").exists()
                    and (state / "redis" / "port").read_text().strip()
                ),
                "the private redis-server",
                proc,
                seconds=30,
            )
            private = redis.Redis(host="127.0.0.1", port=int(port))
            wait_for(lambda: _members(private), "the worker to join the private redis", proc)
            proc.signal(signal.SIGTERM)
            assert proc.wait() == 0, proc.tail()
        assert int(port) == probe
        assert f"started redis-server on 127.0.0.1:{port}" in proc.stderr
        # The script stops the server it started, and withdraws its URL.
        wait_for(lambda: not _answers(private), "the private redis-server to stop")
        assert not (state / "redis" / "url").exists()
    finally:
        if private is not None and _answers(private):
            private.shutdown(nosave=True)


def test_scripts_run_beside_a_taken_port_publishes_its_redis_to_the_repository(
    tmp_path: Path,
) -> None:
    require_binary("redis-server")
    state = tmp_path / "state"
    status = [sys.executable, "-m", "patient_sidekiq", "status", "--json"]
    with socket.socket() as taken:
        # Something that is not Redis holds the probe port (6379's stand-in).
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        probe = taken.getsockname()[1]
        env = clean_environ(
            PATIENT_SIDEKIQ_RUN_PROBE_PORT=str(probe), PATIENT_SIDEKIQ_RUN_DIR=str(state)
        )
        url_file = state / "redis" / "url"
        try:
            with started([str(REPO / "scripts" / "run"), *FAST], tmp_path / "run", env) as proc:
                url = wait_for(
                    lambda: url_file.exists() and url_file.read_text().strip(),
                    "the URL file",
                    proc,
                    seconds=30,
                )
                port = int(url.rsplit(":", 1)[1].split("/")[0])
                assert port != probe
                client = redis.Redis(host="127.0.0.1", port=port)
                wait_for(lambda: _members(client), "the worker to join", proc)
                # A command run inside the repository with no Redis setting finds it.
                with started(status, tmp_path / "status", env) as look:
                    assert look.wait() == 0, look.tail()
                [process] = json.loads(look.stdout)["processes"]
                assert process["identity"] in _members(client)
                redis_pid = (state / "redis" / "pid").read_text()
                proc.signal(signal.SIGTERM)
                assert proc.wait() == 0, proc.tail()
        finally:
            stop_embedded_redis(state)
    assert f"REDIS_URL=redis://127.0.0.1:{port}/0" in proc.stderr
    assert not url_file.exists()
    # A URL file whose redis-server is gone (scripts/run killed with it) is an error.
    url_file.write_text(url)
    (state / "redis" / "pid").write_text(redis_pid)
    with started(status, tmp_path / "stale", env) as look:
        assert look.wait() == 78, look.tail()
    assert f"{url_file} names the Redis scripts/run started ({url})" in look.stderr
    assert f"redis-server (pid {redis_pid.strip()}) no longer runs" in look.stderr
    assert "Traceback" not in look.stderr


def _members(client: redis.Redis) -> set[str]:
    try:
        return processes(client)
    except redis.ConnectionError:
        return set()


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


# --- enqueue -r, status --watch ---


def test_enqueue_require_registers_python_callback_names(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    argv = [sys.executable, "-m", "patient_sidekiq", "enqueue", "get", "http://127.0.0.1:9/"]
    argv += ["--callback", "tests.support.cli_callbacks.Recorder", "--redis-url", redis_url]
    with started(argv, tmp_path / "unknown", clean_environ()) as proc:
        assert proc.wait() == 1
    assert "not registered in Python" in proc.stderr
    assert redis_client.llen("queue:patient_http") == 0

    with started(
        [*argv, "-r", "tests.support.cli_callbacks"], tmp_path / "known", clean_environ()
    ) as proc:
        assert proc.wait() == 0, proc.tail()
    [job] = queue(redis_client, "patient_http")
    # A registered name is written as given; a worker with the same module resolves it.
    assert job["args"][1] == "tests.support.cli_callbacks.Recorder"
    assert job["args"][4] == proc.stdout.strip()


def test_status_watch_repeats_until_interrupted(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    argv = [sys.executable, "-m", "patient_sidekiq", "status", "--watch", "0.05", "--json"]
    with started([*argv, "--redis-url", redis_url], tmp_path, clean_environ()) as proc:
        wait_for(lambda: len(proc.stdout.splitlines()) >= 3, "three frames", proc)
        proc.signal(signal.SIGINT)
        assert proc.wait() == 130
    frames = [json.loads(line) for line in proc.stdout.splitlines() if line]
    assert all(frame["processes"] == [] for frame in frames)
    assert "Traceback" not in proc.stderr


def test_a_worker_without_the_callback_module_routes_to_the_python_queue(
    redis_url: str, redis_client: redis.Redis, api: Api, tmp_path: Path
) -> None:
    # Worker A has the module and runs Python callbacks, but polls no HTTP queue of this
    # test; worker B, a leftover without the module, runs the HTTP request.
    record = tmp_path / "record.jsonl"
    with worker(
        redis_url, tmp_path / "a", "-r", "tests.support.cli_callbacks", "-q", "elsewhere",
        CLI_TEST_RECORD=str(record),
    ) as with_module:  # fmt: skip
        wait_for(
            lambda: redis_client.keys("patient_sidekiq:python_callbacks:*"),
            "worker A to publish its Python callback names",
            with_module,
        )
        with worker(redis_url, tmp_path / "b") as without_module:
            wait_for(
                lambda: len(processes(redis_client)) == 3,
                "worker B to join",
                without_module,
            )
            with Client(redis_url) as client:
                request_id = client.get(api.url("/routed"), callback="CliTest::Recorder")
            wait_for(
                lambda: record.exists() and '"callback"' in record.read_text(),
                "the Python callback, run by worker A",
                without_module,
            )
            assert queue(redis_client, "default") == []  # nothing went to the Ruby queue
            without_module.signal(signal.SIGTERM)
            assert without_module.wait() == 0, without_module.tail()
        with_module.signal(signal.SIGTERM)
        assert with_module.wait() == 0, with_module.tail()
    assert redis_client.keys("patient_sidekiq:python_callbacks:*") == []  # withdrawn at stop
    entries = [json.loads(line) for line in record.read_text().splitlines()]
    assert {"hook": "after_completion", "request_id": request_id} in entries


def test_an_unregistered_python_callback_name_is_logged_and_goes_to_ruby(
    redis_url: str, redis_client: redis.Redis, api: Api, tmp_path: Path
) -> None:
    with worker(redis_url, tmp_path) as proc:
        wait_for(lambda: processes(redis_client), "the worker to join", proc)
        for number in range(2):
            redis_client.lpush(
                "queue:patient_http",
                json.dumps(
                    {
                        "class": "PatientHttp::Sidekiq::RequestWorker",
                        "queue": "patient_http",
                        "args": [
                            {"http_method": "get", "url": api.url("/nobody"), "headers": {}},
                            "nobody.registered.Callback",
                            False,
                            None,
                            f"req-{number}",
                        ],
                        "jid": f"0123456789abcdef0123456{number}",
                        "retry": True,
                        "created_at": 1.0,
                        "enqueued_at": 1.0,
                    }
                ),
            )
        wait_for(lambda: len(queue(redis_client, "default")) == 2, "both callback jobs", proc)
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.tail()
    assert proc.stderr.count("'nobody.registered.Callback' looks like a Python callback") == 1
