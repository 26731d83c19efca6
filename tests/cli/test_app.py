"""The ``patient-sidekiq`` command line through typer's CliRunner (the subprocess tests of
``run`` are in tests/cli/test_cli_run.py)."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis
import trio
from typer.testing import CliRunner

from patient_sidekiq import __version__
from patient_sidekiq.cli.app import app
from patient_sidekiq.cli.demo import run_demo
from patient_sidekiq.client.enqueue import Client
from patient_sidekiq.config.model import (
    FIELDS,
    Config,
    PayloadStoreSpec,
    PreprocessorSpec,
    SecretSpec,
)
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.sidekiq.client import SidekiqClient
from patient_sidekiq.sidekiq.heartbeat import Heartbeat, ProcessInfo
from patient_sidekiq.worker import runner as runner_module
from patient_sidekiq.worker.inflight import InflightMonitor, gem_process_id

runner = CliRunner()


def test_version_flag_and_command() -> None:
    assert runner.invoke(app, ["--version"]).output == f"patient-sidekiq {__version__}\n"
    assert runner.invoke(app, ["version"]).output == f"patient-sidekiq {__version__}\n"


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "--version" in result.output


def test_module_entry_point_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "patient_sidekiq", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == f"patient-sidekiq {__version__}"


# --- run: every option reaches the Config (CliRunner; only the Runner is replaced) ---


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No PATIENT_HTTP_* / REDIS_* variable of the caller leaks into a test's config."""
    for name in list(os.environ):
        if name.startswith("PATIENT_HTTP_") or name in ("REDIS_URL", "REDIS_PROVIDER"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("PATIENT_SIDEKIQ_CHILD_INDEX", raising=False)
    return monkeypatch


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """``run`` and ``demo`` configure the root logger for real; put the caller's back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


@pytest.fixture
def started(clean_env: pytest.MonkeyPatch, restored_logging: None) -> list[Config]:
    """Replace the Runner so ``run`` returns at once; collects the Configs it was built with."""
    configs: list[Config] = []

    class CapturingRunner:
        def __init__(self, config: Config) -> None:
            configs.append(config)

        def http_settings(self) -> None:
            return None  # secrets are not read: the flags' variables need not exist

        async def run(self) -> None:
            return None

    clean_env.setattr(runner_module, "Runner", CapturingRunner)
    return configs


def valid_flag_values(tmp_path: Path) -> dict[str, tuple[list[str], object]]:
    """For each option: the values to pass on the command line and what the Config holds."""
    ca_bundle = tmp_path / "ca.pem"
    ca_bundle.write_text("not checked before a request\n")
    return {
        "redis_url": (["redis://127.0.0.1:6390/3"], "redis://127.0.0.1:6390/3"),
        "redis_sentinels": (["s1:26380", "s2"], (("s1", 26380), ("s2", 26379))),
        "redis_sentinel_master": (["mymaster"], "mymaster"),
        "queues": (["a,2", "b"], (("a", 2), ("b", 0))),
        "callback_queue": (["ruby_cb"], "ruby_cb"),
        "python_callback_queue": (["py_cb"], "py_cb"),
        "require": (["json", "tests.support.http"], ("json", "tests.support.http")),
        "max_connections": (["7"], 7),
        "request_timeout": (["12.5"], 12.5),
        "connection_timeout": (["3"], 3.0),
        "shutdown_timeout": (["9"], 9.0),
        "max_response_size": (["2048"], 2048),
        "max_redirects": (["0"], 0),
        "retries": (["1"], 1),
        "proxy_url": (["http://proxy:3128"], "http://proxy:3128"),
        "user_agent": (["Agent/1.0"], "Agent/1.0"),
        "raise_error_responses": (["true"], True),  # a switch: --raise-error-responses
        "protocol": (["http1"], "http1"),
        "verify_ssl": (["false"], False),  # a switch: --no-verify-ssl
        "ca_bundle": ([str(ca_bundle)], str(ca_bundle)),
        "heartbeat_interval": (["2"], 2.0),
        "orphan_threshold": (["7.5"], 7.5),
        "payload_store_threshold": (["100"], 100),
        "encryption_key": (["new key", "old-key"], ("new key", "old-key")),
        "payload_stores": (
            ["big=redis:60", f"files=file:{tmp_path}"],
            (
                PayloadStoreSpec("big", "redis", ttl=60.0),
                PayloadStoreSpec("files", "file", str(tmp_path)),
            ),
        ),
        "secrets": (
            ["a=env:A", "b=file:/run/b"],
            (SecretSpec("a", "env", "A"), SecretSpec("b", "file", "/run/b")),
        ),
        "preprocessors": (
            ["sign=aws_sigv4:service=s3"],
            (PreprocessorSpec("sign", "aws_sigv4", (("service", "s3"),)),),
        ),
        "default_payload_store": (["big"], "big"),
        "callback_concurrency": (["3"], 3),
        "max_retries": (["4"], 4),
        "backtrace": (["12"], 12),
        "sidekiq_version": (["8"], "8"),
        "tag": (["cli-tag"], "cli-tag"),
        "processes": (["3"], 3),
        "log_format": (["json"], "json"),
        "log_level": (["warn"], "warning"),
        "log_requests": (["off"], "off"),
        "metrics_port": (["9394"], 9394),
        "metrics_host": (["127.0.0.1"], "127.0.0.1"),
    }


def test_every_option_flag_reaches_the_config(
    started: list[Config], clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A worker child of the supervisor runs the runner itself, whatever --processes says.
    clean_env.setenv("PATIENT_SIDEKIQ_CHILD_INDEX", "0")
    values = valid_flag_values(tmp_path)
    assert set(values) == set(FIELDS), "add a value for the new option above"
    argv = ["run"]
    for name, info in FIELDS.items():
        flag = info.flags[-1]
        given, _ = values[name]
        assert info.repeatable or len(given) == 1
        if info.switch:
            positive, negative = flag.split("/")
            argv.append(positive if given == ["true"] else negative)
            continue
        for value in given:
            argv += [flag, value]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    [config] = started
    for name, (_, expected) in values.items():
        assert getattr(config, name) == expected, name


def test_fixed_short_spellings(started: list[Config]) -> None:
    argv = ["run", "-q", "high,3", "-q", "low", "-r", "json", "-c", "11", "-t", "4"]
    argv += ["-g", "short", "--redis-url", "redis://127.0.0.1:1/2"]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    [config] = started
    assert config.queues == (("high", 3), ("low", 0))
    assert config.require == ("json",)
    assert config.max_connections == 11
    assert config.shutdown_timeout == 4.0
    assert config.tag == "short"
    assert config.redis_url == "redis://127.0.0.1:1/2"
    described = [info.flag for info in FIELDS.values()]
    for usage in (
        "--redis-url URL",
        "-q/--queue NAME[,WEIGHT]",
        "--callback-queue NAME",
        "--python-callback-queue NAME",
        "-r/--require MODULE",
        "-c/--max-connections N",
        "-t/--shutdown-timeout SECONDS",
        "--encryption-key KEY",
        "--processes N|auto",
        "--log-format plain|json",
        "-g/--tag TAG",
    ):
        assert usage in described


def test_boolean_options_are_flag_pairs_that_take_no_value(
    started: list[Config], clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    switches = {name for name, info in FIELDS.items() if info.switch}
    assert switches == {"raise_error_responses", "verify_ssl"}
    for name in switches:
        kebab = name.replace("_", "-")
        assert FIELDS[name].flag == f"--{kebab}/--no-{kebab}"

    # A switch followed by another option: no value is swallowed.
    assert runner.invoke(app, ["run", "--no-verify-ssl", "--tag", "x"]).exit_code == 0
    assert (started[-1].verify_ssl, started[-1].tag) == (False, "x")

    # Neither form given: the file and the environment decide, not a False default.
    toml = tmp_path / "switches.toml"
    toml.write_text("raise_error_responses = true\nverify_ssl = false\n")
    assert runner.invoke(app, ["run", "--config", str(toml)]).exit_code == 0
    assert (started[-1].raise_error_responses, started[-1].verify_ssl) == (True, False)
    clean_env.setenv("PATIENT_HTTP_VERIFY_SSL", "yes")
    assert runner.invoke(app, ["run", "--config", str(toml)]).exit_code == 0
    assert started[-1].verify_ssl is True  # env > file
    argv = ["run", "--config", str(toml), "--no-raise-error-responses", "--no-verify-ssl"]
    assert runner.invoke(app, argv).exit_code == 0
    assert (started[-1].raise_error_responses, started[-1].verify_ssl) == (False, False)

    refused = runner.invoke(app, ["run", "--verify-ssl", "false"])
    assert refused.exit_code == 2  # "false" is an unexpected argument now
    assert len(started) == 4


def test_verbose_is_log_level_debug_and_wins_over_log_level(
    started: list[Config], clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("PATIENT_HTTP_LOG_LEVEL", "warning")
    assert runner.invoke(app, ["run"]).exit_code == 0
    assert started[-1].log_level == "warning"
    for argv in (
        ["-v"],
        ["--verbose"],
        ["-v", "--log-level", "error"],
        ["--log-level", "error", "-v"],
    ):
        assert runner.invoke(app, ["run", *argv]).exit_code == 0, argv
        assert started[-1].log_level == "debug", argv
    assert runner.invoke(app, ["run", "--log-level", "error"]).exit_code == 0
    assert started[-1].log_level == "error"


def test_run_help_shows_every_default_and_variable_but_no_secret(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("PATIENT_HTTP_ENCRYPTION_KEY", "key-from-the-env")
    clean_env.setenv("COLUMNS", "80")
    result = runner.invoke(app, ["run", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())  # wrapped lines joined
    for name, info in FIELDS.items():
        assert f"env {', '.join(info.env)}; default {info.default_text}" in text, name
        for spelling in info.flags[0].split("/"):
            assert spelling in text, name
    assert "--verify-ssl / --no-verify-ssl verify TLS certificates" in text
    assert "env PATIENT_HTTP_ENCRYPTION_KEY; default —" in text
    assert "key-from-the-env" not in result.output
    assert "-v, --verbose" in text
    assert "78 on a configuration error" in text
    assert max(len(line) for line in result.output.splitlines()) <= 80


@pytest.mark.parametrize("command", ["", "run", "enqueue", "status", "inflight", "demo", "version"])
def test_no_help_shows_a_type_placeholder(command: str) -> None:
    result = runner.invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0
    for placeholder in ("<bool>", "<str>", "<int", "<float", "BOOL", "TEXT <"):
        assert placeholder not in result.output, (command, placeholder)


def test_processes_auto_is_the_cpu_count(
    started: list[Config], clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("PATIENT_SIDEKIQ_CHILD_INDEX", "0")
    assert runner.invoke(app, ["run", "--processes", "auto"]).exit_code == 0
    assert started[0].processes == (os.cpu_count() or 1)


def test_defaults_without_flags(started: list[Config]) -> None:
    assert runner.invoke(app, ["run"]).exit_code == 0
    assert started == [Config()]


def test_flags_beat_env_beat_toml(
    started: list[Config], clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    toml = tmp_path / "worker.toml"
    toml.write_text('max_connections = 5\ntag = "toml"\nretries = 2\nqueues = ["t,1"]\n')
    clean_env.setenv("PATIENT_HTTP_MAX_CONNECTIONS", "6")
    clean_env.setenv("PATIENT_HTTP_TAG", "env")
    clean_env.setenv("REDIS_URL", "redis://127.0.0.1:2/0")
    result = runner.invoke(app, ["run", "--config", str(toml), "-c", "7"])
    assert result.exit_code == 0, result.output
    [config] = started
    assert config.max_connections == 7  # flag > env > file
    assert config.tag == "env"  # env > file
    assert config.retries == 2  # file > default
    assert config.queues == (("t", 1),)
    assert config.redis_url == "redis://127.0.0.1:2/0"


def test_config_file_from_the_environment(
    started: list[Config], clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    toml = tmp_path / "env.toml"
    toml.write_text('callback_queue = "from_file"\n')
    clean_env.setenv("PATIENT_HTTP_CONFIG", str(toml))
    assert runner.invoke(app, ["run"]).exit_code == 0
    assert started[0].callback_queue == "from_file"


def test_invalid_values_exit_78_with_one_line_per_problem(started: list[Config]) -> None:
    argv = ["run", "-c", "0", "--protocol", "http3", "-q", "", "--log-format", "xml"]
    argv += ["--encryption-key", "", "--heartbeat-interval", "soon"]
    result = runner.invoke(app, argv)
    assert result.exit_code == 78
    assert started == []
    lines = result.stderr.splitlines()
    assert len(lines) == 6, lines
    assert all(line.startswith("patient-sidekiq: ") for line in lines)
    for name in ("max_connections", "protocol", "queues", "log_format", "encryption_key"):
        assert sum(f": {name}:" in line for line in lines) == 1, name
    assert any("heartbeat_interval" in line for line in lines)
    assert "Traceback" not in result.output


def test_cross_option_problems_and_bad_config_file_exit_78(
    started: list[Config], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("max_connectionz = 3\n")
    argv = ["run", "--config", str(bad), "--heartbeat-interval", "10", "--orphan-threshold", "5"]
    result = runner.invoke(app, argv)
    assert result.exit_code == 78
    lines = result.stderr.splitlines()
    assert len(lines) == 2, lines
    assert "did you mean max_connections?" in lines[0]
    assert "must be less than orphan_threshold" in lines[1]


def test_a_require_that_cannot_load_exits_78(started: list[Config]) -> None:
    result = runner.invoke(app, ["run", "-r", "no_such_module_for_cli_tests"])
    assert result.exit_code == 78
    assert result.stderr.startswith("patient-sidekiq: require: cannot load")
    assert started == []


def test_encryption_key_never_printed_on_error(started: list[Config]) -> None:
    result = runner.invoke(app, ["run", "--encryption-key", "s3cret-value", "-c", "x"])
    assert result.exit_code == 78
    assert "s3cret-value" not in result.output


# --- enqueue: the job equals what enqueue.Client writes ---


def queued_jobs(client: redis.Redis, queue: str = "patient_http") -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in reversed(client.lrange(f"queue:{queue}", 0, -1))]


def comparable(job: dict[str, Any]) -> dict[str, Any]:
    """A job without what differs between two enqueues: ids and times."""
    args = list(job["args"])
    args[4] = "<request id>"
    ignored = ("jid", "created_at", "enqueued_at")
    return {key: value for key, value in job.items() if key not in ignored} | {"args": args}


@pytest.mark.integration
def test_enqueue_writes_the_job_the_client_writes(
    clean_env: pytest.MonkeyPatch, redis_url: str, redis_client: redis.Redis
) -> None:
    url = "http://127.0.0.1:9/items?x=1"
    argv = ["enqueue", "post", url, "--callback", "MyApp::Callback", "--redis-url", redis_url]
    argv += ["--json", '{"a": [1, 2]}', "--header", "X-Trace: abc", "-H", "Accept:text/plain"]
    argv += ["--callback-arg", "n=3", "--callback-arg", "ratio=0.5", "--callback-arg", "on=true"]
    argv += ["--callback-arg", "word=hello", "--callback-arg", "none=null"]
    argv += ["--callback-arg", 'obj={"k": [1]}', "--callback-arg", "text=not json {"]
    argv += ["--timeout", "7.5", "--raise-error-responses"]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    request_id = result.stdout.strip()
    [job] = queued_jobs(redis_client)
    assert job["args"][4] == request_id
    callback_args = {
        "n": 3,
        "ratio": 0.5,
        "on": True,
        "word": "hello",
        "none": None,
        "obj": {"k": [1]},
        "text": "not json {",
    }
    assert job["args"][1:4] == ["MyApp::Callback", True, callback_args]

    redis_client.delete("queue:patient_http")
    with Client(redis_url) as client:
        client.request(
            "post",
            url,
            callback="MyApp::Callback",
            json={"a": [1, 2]},
            headers={"X-Trace": "abc", "Accept": "text/plain"},
            timeout=7.5,
            callback_args=callback_args,
            raise_error_responses=True,
        )
    [expected] = queued_jobs(redis_client)
    assert comparable(job) == comparable(expected)


@pytest.mark.integration
def test_enqueue_body_queue_and_defaults(
    clean_env: pytest.MonkeyPatch, redis_url: str, redis_client: redis.Redis
) -> None:
    url = "http://127.0.0.1:9/raw"
    argv = ["enqueue", "put", url, "--callback", "Cb", "--body", "raw text", "-q", "other"]
    argv += ["--no-raise-error-responses", "--redis-url", redis_url]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert queued_jobs(redis_client) == []
    [job] = queued_jobs(redis_client, "other")
    assert job["queue"] == "other"
    with Client(redis_url, queue="other") as client:
        client.request("put", url, callback="Cb", body="raw text", raise_error_responses=False)
    [_, expected] = queued_jobs(redis_client, "other")
    assert comparable(job) == comparable(expected)

    # Without options: the worker's setting decides (null), no callback args (null).
    clean_env.setenv("REDIS_URL", redis_url)
    assert runner.invoke(app, ["enqueue", "get", url, "--callback", "Cb"]).exit_code == 0
    [plain] = queued_jobs(redis_client)
    assert plain["args"][1:4] == ["Cb", None, None]


@pytest.mark.integration
def test_enqueue_encrypts_with_the_key(
    clean_env: pytest.MonkeyPatch, redis_url: str, redis_client: redis.Redis
) -> None:
    argv = ["enqueue", "get", "http://127.0.0.1:9/", "--callback", "Cb"]
    argv += ["--redis-url", redis_url, "--encryption-key", "cli-key"]
    assert runner.invoke(app, argv).exit_code == 0
    [job] = queued_jobs(redis_client)
    assert "127.0.0.1" not in json.dumps(job["args"][0])


@pytest.mark.integration
def test_enqueue_unknown_callback_fails_and_writes_nothing(
    clean_env: pytest.MonkeyPatch, redis_url: str, redis_client: redis.Redis
) -> None:
    argv = ["enqueue", "get", "http://127.0.0.1:9/", "--callback", "not_a_class"]
    result = runner.invoke(app, [*argv, "--redis-url", redis_url])
    assert result.exit_code == 1
    assert "not_a_class" in result.stderr
    assert "not registered in Python" in result.stderr
    assert "Traceback" not in result.output
    assert redis_client.keys("*") == []


def test_enqueue_argument_errors(clean_env: pytest.MonkeyPatch) -> None:
    base = ["enqueue", "get", "http://127.0.0.1:9/", "--callback", "Cb"]
    base += ["--redis-url", "redis://127.0.0.1:1/0"]
    bad_json = runner.invoke(app, [*base, "--json", "{nope"])
    assert bad_json.exit_code == 2
    assert "patient-sidekiq:" in bad_json.stderr
    for option, value in (("--header", "no colon"), ("--callback-arg", "novalue")):
        result = runner.invoke(app, [*base, option, value])
        assert result.exit_code == 2
        assert value in result.output
    missing_callback = runner.invoke(app, ["enqueue", "get", "http://127.0.0.1:9/"])
    assert missing_callback.exit_code == 2
    unreachable = runner.invoke(app, base)
    assert unreachable.exit_code == 1
    assert unreachable.stderr.startswith("patient-sidekiq: ")


# --- status / inflight against real Redis state ---


async def seed_cluster(url: str) -> tuple[str, str]:
    """A live Sidekiq process with one in-flight request, written by the real writers."""
    async with RedisBridge(url) as bridge:
        identity = "clitest-host:1234:abcdef"
        info = ProcessInfo(
            identity=identity,
            concurrency=8,
            queues=[("patient_http", 0)],
            hostname="clitest-host",
            pid=1234,
            tag="t",
        )
        await Heartbeat(bridge, info, running=dict, quiet=lambda: True).beat()
        process_id = gem_process_id("clitest-host", 1234)
        monitor = InflightMonitor(
            bridge, SidekiqClient(bridge), process_id=process_id, max_connections=8
        )
        await monitor.heartbeat([])
        with Client(url) as client:
            client.get("http://127.0.0.1:9/slow", callback="Cb")
        raw = (await bridge.execute("LPOP", "queue:patient_http")).decode()
        await monitor.register("req-cli-1", raw)
        return identity, process_id


@pytest.mark.integration
def test_status_and_inflight_report_redis_state(
    clean_env: pytest.MonkeyPatch, redis_url: str
) -> None:
    identity, process_id = trio.run(seed_cluster, redis_url)
    text = runner.invoke(app, ["status", "--redis-url", redis_url])
    assert text.exit_code == 0, text.output
    assert "clitest-host:1234" in text.stdout
    assert "in flight 1 of 8" in text.stdout

    as_json = runner.invoke(app, ["status", "--json", "--redis-url", redis_url])
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.stdout)
    [process] = [p for p in report["processes"] if p["identity"] == identity]
    assert process["quiet"] is True
    assert process["tag"] == "t"
    assert process["http"]["inflight"] == 1
    assert report["inflight_registered"] == 1

    clean_env.setenv("REDIS_URL", redis_url)
    listed = runner.invoke(app, ["inflight"])
    assert listed.exit_code == 0, listed.output
    assert "req-cli-1" in listed.stdout
    entries = json.loads(runner.invoke(app, ["inflight", "--json", "--limit", "5"]).stdout)
    [entry] = entries
    assert entry["request_id"] == "req-cli-1"
    assert entry["process_id"] == process_id


async def beat_as(url: str, hostname: str, *, version: str | None = None, age: float = 0) -> str:
    """A Sidekiq process entry of ``hostname`` whose last beat was ``age`` seconds ago."""
    async with RedisBridge(url) as bridge:
        identity = f"{hostname}:4321:0123456789ab"
        fields: dict[str, Any] = {"version": version} if version is not None else {}
        info = ProcessInfo(
            identity=identity, concurrency=5, queues=[("q", 0)], hostname=hostname, **fields
        )
        at = time.time() - age
        await Heartbeat(bridge, info, running=dict, quiet=lambda: False, clock=lambda: at).beat()
        return identity


@pytest.mark.integration
def test_status_check_wants_a_live_worker_of_this_host(
    clean_env: pytest.MonkeyPatch, redis_url: str, redis_client: redis.Redis
) -> None:
    clean_env.setenv("REDIS_URL", redis_url)

    def check() -> tuple[int, str]:
        result = runner.invoke(app, ["status", "--check"])
        assert len(result.stdout.splitlines()) == 1, result.output
        return result.exit_code, result.stdout

    here = socket.gethostname()
    assert check() == (1, f"not ok: no live patient-sidekiq worker on {here}\n")
    trio.run(partial(beat_as, redis_url, "another-host"))
    trio.run(partial(beat_as, redis_url, here, version="7.3.10"))  # Ruby's Sidekiq
    assert check()[0] == 1
    redis_client.flushdb()
    trio.run(partial(beat_as, redis_url, here, age=45))  # hash still there, beat stale
    assert check()[0] == 1
    assert runner.invoke(app, ["status"]).exit_code == 1
    redis_client.flushdb()
    identity = trio.run(partial(beat_as, redis_url, here, age=2))
    code, line = check()
    assert code == 0
    assert line.startswith(f"ok: 1 live patient-sidekiq process(es) on {here}: {identity}")
    assert runner.invoke(app, ["status"]).exit_code == 0
    assert runner.invoke(app, ["status", "--json"]).exit_code == 0


@pytest.mark.integration
def test_status_on_an_empty_redis_exits_1(clean_env: pytest.MonkeyPatch, redis_url: str) -> None:
    result = runner.invoke(app, ["status", "--json", "--redis-url", redis_url])
    assert result.exit_code == 1, result.output  # no worker alive: scripts see it
    assert json.loads(result.stdout)["processes"] == []
    assert json.loads(result.stdout)["live_workers"] == 0
    text = runner.invoke(app, ["status", "--redis-url", redis_url])
    assert text.exit_code == 1
    assert "No patient-sidekiq worker is alive." in text.stdout
    assert (
        json.loads(runner.invoke(app, ["inflight", "--json", "--redis-url", redis_url]).stdout)
        == []
    )


def test_status_and_inflight_without_redis_exit_1(clean_env: pytest.MonkeyPatch) -> None:
    for command in ("status", "inflight"):
        result = runner.invoke(app, [command, "--redis-url", "redis://127.0.0.1:1/0"])
        assert result.exit_code == 1, command
        assert result.stderr.startswith("patient-sidekiq: ")
    check = runner.invoke(app, ["status", "--check", "--redis-url", "redis://127.0.0.1:1/0"])
    assert check.exit_code == 69
    assert len(check.stderr.splitlines()) == 1
    assert check.stderr.startswith("patient-sidekiq: Redis connection failed")


@pytest.mark.integration
def test_enqueue_status_inflight_read_redis_url_from_config_file(
    clean_env: pytest.MonkeyPatch, redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    toml = tmp_path / "cli.toml"
    toml.write_text(f'redis_url = "{redis_url}"\nqueues = ["from_toml"]\n')
    argv = ["enqueue", "get", "http://127.0.0.1:9/", "--callback", "Cb", "--config", str(toml)]
    assert runner.invoke(app, argv).exit_code == 0
    assert len(queued_jobs(redis_client, "from_toml")) == 1  # the first configured queue
    status = runner.invoke(app, ["status", "--json", "--config", str(toml)])
    assert status.exit_code == 1, status.output  # read, but no worker alive
    assert json.loads(status.stdout)["processes"] == []
    inflight = runner.invoke(app, ["inflight", "--config", str(toml)])
    assert inflight.exit_code == 0, inflight.output


def test_commands_reject_a_bad_config_file_with_78(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('redis_url = "http://not-redis"\n')
    for argv in (
        ["status", "--config", str(bad)],
        ["inflight", "--config", str(bad)],
        ["demo", "--config", str(bad)],
        ["enqueue", "get", "http://127.0.0.1:9/", "--callback", "Cb", "--config", str(bad)],
    ):
        result = runner.invoke(app, argv)
        assert result.exit_code == 78, argv
        assert result.stderr.startswith("patient-sidekiq: redis_url:"), argv


# --- demo ---


def test_demo_needs_at_least_one_request(clean_env: pytest.MonkeyPatch) -> None:
    result = runner.invoke(app, ["demo", "-n", "0", "--redis-url", "redis://127.0.0.1:1/0"])
    assert result.exit_code == 2


def test_demo_without_redis_fails_at_once(
    clean_env: pytest.MonkeyPatch, restored_logging: None
) -> None:
    result = runner.invoke(app, ["demo", "-n", "3", "--redis-url", "redis://127.0.0.1:1/0"])
    assert result.exit_code == 1
    assert result.stderr.startswith("patient-sidekiq: Redis connection failed")


@pytest.mark.integration
async def test_run_demo_with_no_requests_ends_at_once(redis_url: str) -> None:
    out = io.StringIO()
    assert await run_demo(Config(redis_url=redis_url), requests=0, out=out)
    assert "All callbacks ran." in out.getvalue()
