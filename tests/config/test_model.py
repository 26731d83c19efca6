"""Config: defaults, the four sources and their priority, validation, builders."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import redis

from patient_sidekiq.config.loader import load_config
from patient_sidekiq.config.model import (
    FIELDS,
    Config,
    PayloadStoreSpec,
    PreprocessorSpec,
    SecretSpec,
    options_table_markdown,
)
from patient_sidekiq.errors import ConfigurationError
from patient_sidekiq.http.settings import HttpSettings
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.redis_io.redis_target import RedisTarget
from patient_sidekiq.sidekiq.job import TimestampDialect
from patient_sidekiq.sidekiq.launcher import WorkerSettings
from patient_sidekiq.wire.encryption import MessageEncryptor
from patient_sidekiq.wire.packing import PayloadSettings
from patient_sidekiq.wire.payload_store import FilePayloadStore, RedisPayloadStore


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "patient.toml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(**sources: Any) -> list[str]:
    """The lines of the one ConfigurationError that ``load_config(**sources)`` raises."""
    sources.setdefault("env", {})
    with pytest.raises(ConfigurationError) as caught:
        load_config(**sources)
    return str(caught.value).splitlines()


# --- defaults and metadata ---


def test_defaults() -> None:
    config = load_config(env={})
    assert config == Config()
    assert config.redis_url == "redis://localhost:6379/0"
    assert config.queues == (("patient_http", 0),)
    assert (config.max_connections, config.shutdown_timeout, config.max_retries) == (256, 25.0, 25)
    assert (config.heartbeat_interval, config.orphan_threshold) == (60.0, 300.0)
    assert config.payload_store_threshold == 65_536
    assert config.sidekiq_version == "7"
    assert config.encryption_key == ()
    assert config.default_store_name is None


def test_fields_metadata_covers_every_option() -> None:
    names = [f.name for f in dataclasses.fields(Config)]
    assert list(FIELDS) == names
    for field in dataclasses.fields(Config):
        info = FIELDS[field.name]
        assert info.default == field.default
        assert info.env[0] == "PATIENT_HTTP_" + field.name.upper()
        assert info.kind
        assert info.help
        assert info.toml.startswith(field.name)


@pytest.mark.parametrize(
    ("name", "flag"),
    [
        ("redis_url", "--redis-url URL"),
        ("queues", "-q/--queue NAME[,WEIGHT]"),
        ("callback_queue", "--callback-queue NAME"),
        ("python_callback_queue", "--python-callback-queue NAME"),
        ("require", "-r/--require MODULE"),
        ("max_connections", "-c/--max-connections N"),
        ("shutdown_timeout", "-t/--shutdown-timeout SECONDS"),
        ("encryption_key", "--encryption-key KEY"),
        ("processes", "--processes N|auto"),
        ("log_format", "--log-format plain|json"),
        ("tag", "-g/--tag TAG"),
        ("payload_stores", "--payload-store SPEC"),
        ("redis_sentinels", "--redis-sentinel HOST:PORT"),
        ("redis_sentinel_master", "--redis-sentinel-master NAME"),
        ("request_timeout", "--request-timeout SECONDS"),  # the kebab-case rule
        ("verify_ssl", "--verify-ssl/--no-verify-ssl"),  # a switch: no value
    ],
)
def test_fixed_flag_spellings(name: str, flag: str) -> None:
    assert FIELDS[name].flag == flag


def test_repeatable_flags() -> None:
    repeatable = {name for name, info in FIELDS.items() if info.repeatable}
    assert repeatable == {
        "queues",
        "require",
        "encryption_key",
        "payload_stores",
        "redis_sentinels",
        "secrets",
        "preprocessors",
    }


def test_options_table_markdown() -> None:
    table = options_table_markdown()
    lines = table.splitlines()
    assert lines[0] == "| option | flag | env | TOML | default | meaning |"
    assert len(lines) == 2 + 1 + len(FIELDS)  # header, rule, --config, one row per option
    assert "`-q/--queue NAME[,WEIGHT]`" in table
    assert "`--log-format plain\\|json`" in table  # pipes escaped inside cells
    assert "`PATIENT_HTTP_REDIS_URL`, `REDIS_URL`" in table


# --- sources and their priority ---


def test_each_source_overrides_the_lower_one(tmp_path: Path) -> None:
    path = write(tmp_path, "max_connections = 10\ntag = 'file'\nretries = 1\n")
    env = {"PATIENT_HTTP_MAX_CONNECTIONS": "20", "PATIENT_HTTP_TAG": "env"}
    flags = {"max_connections": "30"}
    assert load_config(config_file=path, env={}).max_connections == 10
    assert load_config(config_file=path, env=env).max_connections == 20
    config = load_config(config_file=path, env=env, flags=flags)
    assert (config.max_connections, config.tag, config.retries) == (30, "env", 1)
    assert config.request_timeout == 60.0  # untouched: the default


def test_a_list_from_a_higher_source_replaces_the_lower_one(tmp_path: Path) -> None:
    path = write(tmp_path, 'queues = ["a", "b"]\n')
    config = load_config(config_file=path, env={}, flags={"queues": ["c,1"]})
    assert config.queues == (("c", 1),)


def test_config_file_from_the_environment_or_a_flag(tmp_path: Path) -> None:
    path = write(tmp_path, "max_connections = 7\n")
    assert load_config(env={"PATIENT_HTTP_CONFIG": str(path)}).max_connections == 7
    assert load_config(env={}, flags={"config": str(path)}).max_connections == 7


def test_flag_string_forms(tmp_path: Path) -> None:
    config = load_config(
        env={},
        flags={
            "redis_url": "rediss://:pw@redis.example:6380/2",
            "queues": ["patient_http,3", "low", "urgent,0"],
            "callback_queue": "ruby_cb",
            "python_callback_queue": "py_cb",
            "require": ["myapp.callbacks", "hooks.py"],
            "max_connections": "64",
            "shutdown_timeout": "7.5",
            "encryption_key": ["new key ", "old"],
            "processes": "3",
            "log_format": "json",
            "log_level": "WARN",
            "tag": "blue",
            "payload_stores": ["old=file:" + str(tmp_path), "big=redis:86400"],
            "redis_sentinels": ["s1:26379", "[::1]:26380", "s3"],
            "redis_sentinel_master": "mymaster",
            "raise_error_responses": "yes",
            "verify_ssl": "0",
            "protocol": "http1",
            "connection_timeout": "2",
            "sidekiq_version": "8.0",
        },
    )
    assert config.redis_url == "rediss://:pw@redis.example:6380/2"
    assert config.queues == (("patient_http", 3), ("low", 0), ("urgent", 0))
    assert (config.callback_queue, config.python_callback_queue) == ("ruby_cb", "py_cb")
    assert config.require == ("myapp.callbacks", "hooks.py")
    assert (config.max_connections, config.shutdown_timeout) == (64, 7.5)
    assert config.encryption_key == ("new key ", "old")  # keys are never stripped
    assert (config.processes, config.log_format, config.log_level) == (3, "json", "warning")
    assert config.tag == "blue"
    assert config.payload_stores == (
        PayloadStoreSpec("old", "file", directory=str(tmp_path)),
        PayloadStoreSpec("big", "redis", ttl=86400.0),
    )
    assert config.default_store_name == "big"  # the last configured, like the gem
    assert config.redis_sentinels == (("s1", 26379), ("::1", 26380), ("s3", 26379))
    assert config.redis_sentinel_master == "mymaster"
    assert (config.raise_error_responses, config.verify_ssl) == (True, False)
    assert (config.protocol, config.connection_timeout) == ("http1", 2.0)
    assert config.sidekiq_version == "8"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("false", False),
        ("1", True),
        ("0", False),
        ("yes", True),
        ("No", False),
        (True, True),
    ],
)
def test_boolean_forms(text: object, expected: bool) -> None:
    assert load_config(env={}, flags={"verify_ssl": text}).verify_ssl is expected


def test_typed_flag_values() -> None:
    config = load_config(
        env={},
        flags={
            "queues": [("a", 2), ("b", 0)],
            "max_connections": 8,
            "payload_stores": [PayloadStoreSpec("s", "redis")],
            "redis_sentinels": [("h", 1)],
            "redis_sentinel_master": "m",
            "encryption_key": "single",  # one string is one key
        },
    )
    assert config.queues == (("a", 2), ("b", 0))
    assert config.payload_stores == (PayloadStoreSpec("s", "redis"),)
    assert config.encryption_key == ("single",)


def test_processes_auto() -> None:
    assert load_config(env={}, flags={"processes": "auto"}).processes == (os.cpu_count() or 1)
    assert load_config(env={"PATIENT_HTTP_PROCESSES": "AUTO"}).processes == (os.cpu_count() or 1)


def test_environment_list_syntax(tmp_path: Path) -> None:
    config = load_config(
        env={
            "PATIENT_HTTP_QUEUES": "patient_http,3; low",
            "PATIENT_HTTP_ENCRYPTION_KEY": "new,old",
            "PATIENT_HTTP_REQUIRE": "a.b, c",
            "PATIENT_HTTP_REDIS_SENTINELS": "s1:1,s2:2",
            "PATIENT_HTTP_REDIS_SENTINEL_MASTER": "mymaster",
            "PATIENT_HTTP_PAYLOAD_STORES": f"f=file:{tmp_path},r=redis:60",
            "PATIENT_HTTP_MAX_REDIRECTS": "",  # empty counts as unset
        }
    )
    assert config.queues == (("patient_http", 3), ("low", 0))
    assert config.encryption_key == ("new", "old")
    assert config.require == ("a.b", "c")
    assert config.redis_sentinels == (("s1", 1), ("s2", 2))
    assert [spec.name for spec in config.payload_stores] == ["f", "r"]
    assert config.max_redirects == 5


def test_redis_url_conventions() -> None:
    ours = "redis://ours:6379/1"
    sidekiq = "redis://sidekiq:6379/2"
    assert load_config(env={"REDIS_URL": sidekiq}).redis_url == sidekiq
    both = {"REDIS_URL": sidekiq, "PATIENT_HTTP_REDIS_URL": ours}
    assert load_config(env=both).redis_url == ours
    provider = {
        "REDIS_PROVIDER": "MY_REDIS",
        "MY_REDIS": "redis://provided/3",
        "REDIS_URL": sidekiq,
    }
    assert load_config(env=provider).redis_url == "redis://provided/3"
    assert load_config(env=provider | {"PATIENT_HTTP_REDIS_URL": ours}).redis_url == ours
    assert load_config(env={"REDIS_URL": sidekiq}, flags={"redis_url": ours}).redis_url == ours
    (line,) = problems(env={"REDIS_PROVIDER": "redis://oops"})
    assert line.startswith("redis_url: REDIS_PROVIDER must name the variable")


def test_toml_string_forms(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
queues = ["patient_http,2", "low"]
encryption_key = "only"
redis_sentinels = ["s1:26379"]
redis_sentinel_master = "mymaster"
payload_stores = ["a=redis", "b=file:{tmp_path}"]
processes = "auto"
sidekiq_version = 8
request_timeout = 5
verify_ssl = false
""",
    )
    config = load_config(config_file=path, env={})
    assert config.queues == (("patient_http", 2), ("low", 0))
    assert config.encryption_key == ("only",)
    assert config.redis_sentinels == (("s1", 26379),)
    assert [s.name for s in config.payload_stores] == ["a", "b"]
    assert config.processes == (os.cpu_count() or 1)
    assert (config.sidekiq_version, config.request_timeout, config.verify_ssl) == ("8", 5.0, False)


def test_toml_table_forms(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
encryption_key = ["new", "old"]
redis_sentinels = [{{ host = "s1", port = 1 }}]
redis_sentinel_master = "m"
default_payload_store = "first"

[[queues]]
name = "patient_http"
weight = 3

[[queues]]
name = "low"

[payload_stores.first]
adapter = "redis"
ttl = 3600

[payload_stores.second]
adapter = "file"
directory = "{tmp_path}"
""",
    )
    config = load_config(config_file=path, env={})
    assert config.queues == (("patient_http", 3), ("low", 0))
    assert config.encryption_key == ("new", "old")
    assert config.redis_sentinels == (("s1", 1),)
    assert config.payload_stores == (
        PayloadStoreSpec("first", "redis", ttl=3600.0),
        PayloadStoreSpec("second", "file", directory=str(tmp_path)),
    )
    assert config.default_store_name == "first"


# --- validation ---


def test_the_message_names_option_value_source_and_what_is_accepted() -> None:
    assert problems(env={"PATIENT_HTTP_MAX_CONNECTIONS": "abc"}) == [
        'max_connections: "abc" from PATIENT_HTTP_MAX_CONNECTIONS is not an integer ≥ 1'
    ]
    assert problems(flags={"max_connections": "0"}) == [
        'max_connections: "0" from flag -c/--max-connections is not an integer ≥ 1'
    ]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
max_conections = 5
request_timeout = 0
payload_stores = ["f=file"]
default_payload_store = "nowhere"
heartbeat_interval = 600
""",
    )
    env = {
        "PATIENT_HTTP_MAX_CONNECTIONS": "abc",
        "PATIENT_HTTP_REDIS_URL": "http://:secret@localhost",
        "PATIENT_HTTP_QUEUES": "a,x;;b,-1",
        "PATIENT_HTTP_SHUTDOWN_TIMEOUT": "-1",
        "PATIENT_HTTP_ENCRYPTION_KEY": "good,,",
        "PATIENT_HTTP_PROXY_URL": "ftp://proxy",
        "PATIENT_HTTP_RETRIES": "1.5",
        "PATIENT_HTTP_MAX_REDIRECT": "3",  # a typo of PATIENT_HTTP_MAX_REDIRECTS
    }
    flags = {
        "protocol": "http3",
        "verify_ssl": "maybe",
        "log_level": "loud",
        "log_format": "xml",
        "metrics_port": "70000",
        "backtrace": "-3",
        "log_requests": "loud",
        "sidekiq_version": "5",
        "processes": "0",
        "ca_bundle": str(tmp_path / "missing.pem"),
        "redis_sentinels": ["host:notaport"],
        "request_timeout": "nan",
        "callback_queue": " ",
        "require": ["not a module"],
        "no_such_option": 1,
    }
    lines = problems(config_file=path, env=env, flags=flags)
    expected = [
        f"max_conections: unknown key in config file {path} (did you mean max_connections?)",
        "PATIENT_HTTP_MAX_REDIRECT: unknown environment variable "
        "(did you mean PATIENT_HTTP_MAX_REDIRECTS?)",
        "no_such_option: unknown option (from the command line)",
        'redis_url: "http://:***@localhost" from PATIENT_HTTP_REDIS_URL is not a redis://, '
        "rediss:// or unix:// URL",
        'redis_sentinels: "host:notaport" from flag --redis-sentinel is not a sentinel',
        'queues: "a,x" from PATIENT_HTTP_QUEUES is not a queue NAME[,WEIGHT]',
        'queues: "" from PATIENT_HTTP_QUEUES is not a queue NAME[,WEIGHT]',
        'queues: "b,-1" from PATIENT_HTTP_QUEUES is not a queue NAME[,WEIGHT]',
        'callback_queue: " " from flag --callback-queue is not a non-empty name',
        'require: "not a module" from flag -r/--require is not a module name',
        'max_connections: "abc" from PATIENT_HTTP_MAX_CONNECTIONS is not an integer ≥ 1',
        'request_timeout: "nan" from flag --request-timeout is not a number of seconds > 0',
        'shutdown_timeout: "-1" from PATIENT_HTTP_SHUTDOWN_TIMEOUT is not a number of seconds',
        'retries: "1.5" from PATIENT_HTTP_RETRIES is not an integer ≥ 0',
        'proxy_url: "ftp://proxy" from PATIENT_HTTP_PROXY_URL is not an http:// or https:// URL',
        'protocol: "http3" from flag --protocol is not one of auto, http1, http2',
        'verify_ssl: "maybe" from flag --verify-ssl/--no-verify-ssl is not a boolean',
        f'ca_bundle: "{tmp_path / "missing.pem"}" from flag --ca-bundle is not an existing file',
        # the empty items of "good,,": every line hides the key itself
        '"" from PATIENT_HTTP_ENCRYPTION_KEY is not a non-empty key',
        '"" from PATIENT_HTTP_ENCRYPTION_KEY is not a non-empty key',
        f'payload_stores: "f=file" from config file {path} is a file store without a directory',
        'sidekiq_version: "5" from flag --sidekiq-version is not a Sidekiq version 6, 7 or 8',
        'processes: "0" from flag --processes is not an integer ≥ 1 or "auto"',
        'log_format: "xml" from flag --log-format is not one of plain, json',
        'log_level: "loud" from flag --log-level is not one of debug, info, warning, error',
        'metrics_port: "70000" from flag --metrics-port is not a TCP port (1 to 65535)',
        'backtrace: "-3" from flag --backtrace is not true, false or a number of lines ≥ 0',
        'log_requests: "loud" from flag --log-requests is not one of info, debug, off',
    ]
    assert len(lines) == len(expected), "\n".join(lines)
    for want in expected:
        assert sum(want in line for line in lines) >= 1, f"missing: {want}\n" + "\n".join(lines)
    assert "secret" not in "\n".join(lines)


def test_rules_between_options(tmp_path: Path) -> None:
    path = write(tmp_path, "heartbeat_interval = 300\ndefault_payload_store = 'x'\n")
    lines = problems(
        config_file=path,
        env={"PATIENT_HTTP_REDIS_SENTINELS": "s:1", "PATIENT_HTTP_REDIS_URL": "unix:///r.sock"},
        flags={"payload_stores": ["a=redis", "a=redis:5"], "queues": []},
    )
    assert lines == [
        "queues: no queue given (queues from flag -q/--queue); at least one is required",
        "heartbeat_interval: 300.0 must be less than orphan_threshold 300.0 "
        f"(heartbeat_interval from config file {path}, orphan_threshold from default)",
        "redis_sentinel_master: required with redis_sentinels "
        "(redis_sentinels from PATIENT_HTTP_REDIS_SENTINELS)",
        "redis_url: a unix:// URL cannot be used with sentinels "
        "(redis_url from PATIENT_HTTP_REDIS_URL)",
        "payload_stores: 'a' is configured twice (payload_stores from flag --payload-store)",
        f"default_payload_store: 'x' from config file {path} is not a configured payload "
        "store (configured: a, a)",
    ]
    (line,) = problems(flags={"redis_sentinel_master": "m"})
    assert line.startswith("redis_sentinels: at least one is required with redis_sentinel_master")


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("f=file", "without a directory"),
        ("nameless", "is not a payload store"),
        ("=redis", "the name is empty"),
        ("s=mongo:x", "adapter must be redis, file, s3, active_record"),
        ("s=s3:bucket", "'bucket': the s3 adapter takes bucket, key_prefix"),
        ("s=s3:key_prefix=p/", "an s3 store without a bucket"),
        ("s=s3:bucket=b&endpoint_url=ftp://x", "endpoint_url that is not an http(s):// URL"),
        ("s=active_record:url=mysql://x/y", "url is not sqlite:///FILE or postgresql://"),
        ("s=active_record:url=sqlite:///x.db&table=a;b", "table 'a;b' that is not an SQL"),
        ("s=redis:bucket=b", "the redis adapter takes ttl, key_prefix, url"),
        ("s=redis:0", "ttl that is not a number of seconds > 0"),
        ("s=redis:0.0001", "under 0.0005 s"),
        ("s=redis:soon", "ttl that is not a number"),
    ],
)
def test_payload_store_problems(spec: str, reason: str) -> None:
    (line,) = problems(flags={"payload_stores": [spec]})
    assert reason in line
    assert line.startswith(f'payload_stores: "{spec}" from flag --payload-store ')


def test_payload_store_table_problems(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[payload_stores.a]\nadapter = "file"\ndirectory = "/d"\nttl = 5\n'
        '[payload_stores.b]\nadapter = "redis"\ndirectory = "/d"\n'
        '[payload_stores.c]\nadapter = "redis"\nbucket = "x"\n',
    )
    lines = problems(config_file=path)
    assert [line.split(f"config file {path} ")[1] for line in lines] == [
        "is a file store, which takes directory, not ttl",
        "is a redis store, which takes ttl, key_prefix, url, not directory",
        "is a redis store, which takes ttl, key_prefix, url, not bucket",
    ]


def test_s3_and_active_record_stores(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[payload_stores.objects]
adapter = "s3"
bucket = "payloads"
key_prefix = "app/"
endpoint_url = "http://127.0.0.1:9000"
region = "eu-west-1"

[payload_stores.rows]
adapter = "active_record"
url = "postgresql://app:pw@db/app"
""",
    )
    config = load_config(config_file=path, env={})
    objects, rows = config.payload_stores
    assert objects == PayloadStoreSpec(
        "objects", "s3", key_prefix="app/", bucket="payloads",
        endpoint_url="http://127.0.0.1:9000", region="eu-west-1",
    )  # fmt: skip
    assert rows == PayloadStoreSpec(
        "rows", "active_record", url="postgresql://app:pw@db/app", table="patient_http_payloads"
    )
    assert config.store_urls() == []  # a database URL is no Redis of a store's own
    described = config.describe()["payload_stores"]
    assert described == [
        "objects (s3://payloads/app/, endpoint http://127.0.0.1:9000)",
        "rows (active_record: postgresql://app:***@db/app table patient_http_payloads)",
    ]
    flagged = load_config(
        env={
            "PATIENT_HTTP_PAYLOAD_STORES": "o=s3:bucket=b,r=active_record:url=sqlite:///x.db&table=t"
        }
    )
    assert flagged.payload_stores == (
        PayloadStoreSpec("o", "s3", bucket="b"),
        PayloadStoreSpec("r", "active_record", url="sqlite:///x.db", table="t"),
    )


# --- secrets and preprocessors ---


def test_secrets_from_every_source(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[secrets]
openai = { env = "OPENAI_API_KEY" }
mounted = { file = "/run/secrets/token" }
inline = { value = "s3cr3t value" }
short = "env:SHORT_KEY"
""",
    )
    config = load_config(config_file=path, env={})
    assert config.secrets == (
        SecretSpec("openai", "env", "OPENAI_API_KEY"),
        SecretSpec("mounted", "file", "/run/secrets/token"),
        SecretSpec("inline", "value", "s3cr3t value"),
        SecretSpec("short", "env", "SHORT_KEY"),
    )
    shown = repr(config) + repr(config.describe())
    assert "s3cr3t" not in shown
    assert "inline (value)" in shown
    assert "openai (env OPENAI_API_KEY)" in shown
    from_env = load_config(env={"PATIENT_HTTP_SECRETS": "a=env:A, b=file:/x"})
    assert from_env.secrets == (SecretSpec("a", "env", "A"), SecretSpec("b", "file", "/x"))
    from_flags = load_config(env={}, flags={"secrets": ["a=env:A"]})
    assert from_flags.secrets == (SecretSpec("a", "env", "A"),)


def test_a_literal_secret_is_refused_outside_toml_and_never_echoed() -> None:
    (line,) = problems(flags={"secrets": ["token=value:hunter2"]})
    assert "hunter2" not in line
    assert line.startswith("secrets: (the secret 'token') from flag --secret is not a secret")
    lines = problems(flags={"secrets": ["a=env:A", "a=file:/f"]})
    assert lines == ["secrets: 'a' is configured twice (secrets from flag --secret)"]


def test_preprocessors_from_toml_and_flags(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[preprocessors.sign]\nbuiltin = "aws_sigv4"\nservice = "s3"\nunsigned_payload = true\n',
    )
    config = load_config(config_file=path, env={})
    assert config.preprocessors == (
        PreprocessorSpec("sign", "aws_sigv4", (("service", "s3"), ("unsigned_payload", "true"))),
    )
    assert config.describe()["preprocessors"] == [
        "sign (aws_sigv4 service=s3 unsigned_payload=true)"
    ]
    flagged = load_config(
        env={}, flags={"preprocessors": ["p=aws_sigv4:service=execute-api&region=eu-west-1"]}
    )
    assert flagged.preprocessors == (
        PreprocessorSpec("p", "aws_sigv4", (("region", "eu-west-1"), ("service", "execute-api"))),
    )
    (line,) = problems(flags={"preprocessors": ["nameless"]})
    assert "is not a preprocessor NAME=BUILTIN" in line


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    (line,) = problems(config_file=tmp_path / "absent.toml")
    assert line.startswith(f"config: cannot read config file {tmp_path / 'absent.toml'}")
    (line,) = problems(config_file=write(tmp_path, "max_connections = = 1"))
    assert "is not valid TOML" in line


def test_unknown_environment_variables_without_a_close_match_only_warn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="patient_sidekiq.config.model"):
        config = load_config(env={"PATIENT_HTTP_SOMETHING_ELSE": "1", "UNRELATED": "x"})
    assert config == Config()
    assert [r.getMessage() for r in caplog.records] == [
        "ignoring unknown environment variable PATIENT_HTTP_SOMETHING_ELSE"
    ]


def test_direct_construction_and_replace_are_checked() -> None:
    with pytest.raises(ConfigurationError, match=r"max_connections: 0 from Config is not"):
        Config(max_connections=0)
    config = Config(queues=("a,2", "b"))  # type: ignore[arg-type]  # normalised like a flag
    assert config.queues == (("a", 2), ("b", 0))
    changed = config.replace(max_connections=5, heartbeat_interval=1)
    assert (changed.max_connections, changed.heartbeat_interval) == (5, 1.0)
    assert changed.queues == config.queues
    with pytest.raises(ConfigurationError, match=r"replace\(\) is not a number of seconds > 0"):
        config.replace(request_timeout=-1)
    with pytest.raises(ConfigurationError, match="bogus: unknown option"):
        config.replace(bogus=1)
    with pytest.raises(ConfigurationError, match="must be less than orphan_threshold"):
        config.replace(heartbeat_interval=400)


# --- builders ---


def test_redis_target() -> None:
    assert Config().redis_target() == RedisTarget("redis://localhost:6379/0")
    config = Config(
        redis_url="redis://:pw@x/3", redis_sentinels=(("s", 1),), redis_sentinel_master="m"
    )
    assert config.redis_target() == RedisTarget("redis://:pw@x/3", (("s", 1),), "m")


def test_http_settings() -> None:
    config = Config(
        request_timeout=5,
        connection_timeout=1,
        max_response_size=10,
        max_redirects=0,
        retries=1,
        proxy_url="http://proxy:3128",
        user_agent="UA",
        raise_error_responses=True,
        protocol="http2",
        verify_ssl=False,
        ca_bundle=None,
        max_connections=9,
    )
    assert config.http_settings() == HttpSettings(
        request_timeout=5.0,
        connection_timeout=1.0,
        max_response_size=10,
        max_redirects=0,
        retries=1,
        proxy_url="http://proxy:3128",
        user_agent="UA",
        raise_error_responses=True,
        protocol="http2",
        verify=False,
        ca_bundle=None,
        max_connections=9,
    )


def test_worker_settings() -> None:
    config = Config(
        queues=(("a", 2), ("b", 0)), max_connections=40, shutdown_timeout=9, tag="t", max_retries=3
    )
    settings = config.worker_settings(identity="host:1:abc")
    assert isinstance(settings, WorkerSettings)
    assert settings.redis_url == config.redis_target()
    assert (settings.queues, settings.concurrency) == ((("a", 2), ("b", 0)), 40)
    assert (settings.shutdown_timeout, settings.tag, settings.max_retries) == (9.0, "t", 3)
    assert (settings.dialect, settings.backoff) == (TimestampDialect.SECONDS, "7")
    assert settings.identity == "host:1:abc"
    eight = config.replace(sidekiq_version="8").worker_settings()
    assert (eight.dialect, eight.backoff) == (TimestampDialect.MILLIS, "8")
    assert eight.identity != config.worker_settings().identity  # a fresh identity each time
    six = config.replace(sidekiq_version="6").worker_settings()
    assert (six.dialect, six.backoff) == (TimestampDialect.SECONDS, "7")


def test_encryptor_uses_every_key() -> None:
    assert Config().encryptor() is None
    old = MessageEncryptor("old")
    envelope = old.encrypt({"a": 1})
    encryptor = Config(encryption_key=("new", "old")).encryptor()
    assert encryptor is not None
    assert encryptor.decrypt(envelope) == {"a": 1}
    with pytest.raises(Exception, match=r"."):
        old.decrypt(encryptor.encrypt({"a": 1}))  # the first key encrypts


async def test_payload_settings(tmp_path: Path) -> None:
    config = Config(
        payload_stores=(
            PayloadStoreSpec("disk", "file", directory=str(tmp_path / "payloads")),
            PayloadStoreSpec("mem", "redis", ttl=60),
        ),
        payload_store_threshold=100,
        encryption_key=("k",),
        heartbeat_interval=5,
        orphan_threshold=50,
    )
    bridge = RedisBridge("redis://127.0.0.1:1/0")  # never entered: nothing connects
    payloads = config.payload_settings(bridge)
    assert isinstance(payloads, PayloadSettings)
    assert isinstance(payloads.stores["disk"], FilePayloadStore)
    assert isinstance(payloads.stores["mem"], RedisPayloadStore)
    assert payloads.default_store == "mem"
    assert payloads.store_threshold == 100
    assert payloads.encryptor is not None
    assert config.replace(default_payload_store="disk").payload_settings(bridge).default_store == (
        "disk"
    )
    assert Config().payload_settings(bridge) == PayloadSettings()


@pytest.mark.integration
async def test_redis_payload_store_writes_through_the_bridge(
    redis_url: str, redis_client: redis.Redis
) -> None:
    config = Config(redis_url=redis_url, payload_stores=(PayloadStoreSpec("r", "redis", ttl=60),))
    async with RedisBridge(config.redis_target()) as bridge:
        store = config.payload_settings(bridge).stores["r"]
        await store.put("abc", '{"x":1}')
    assert redis_client.get("patient_http:payloads:abc") == b'{"x":1}'
    assert 0 < redis_client.pttl("patient_http:payloads:abc") <= 60_000


def test_describe_is_safe_to_log() -> None:
    config = Config(
        redis_url="redis://:hunter2@redis:6379/0",
        encryption_key=("key-one-secret", "key-two-secret"),
        proxy_url="http://user:proxypass@proxy:3128",
        payload_stores=(PayloadStoreSpec("big", "redis", ttl=60),),
    )
    described = config.describe()
    text = repr(described)
    assert described["redis"] == "redis://:***@redis:6379/0"
    assert described["encryption"] == "on (2 keys)"
    assert described["proxy_url"] == "http://user:***@proxy:3128"
    assert described["payload_stores"] == ["big (redis, ttl 60.0 s)"]
    assert described["default_payload_store"] == "big"
    assert "key-one-secret" not in text
    assert "hunter2" not in text
    assert "proxypass" not in text
    shown = repr(config)  # a traceback shows no secret either
    assert "key-one-secret" not in shown
    assert "hunter2" not in shown
    assert "proxypass" not in shown
    assert "encryption_key=<2 keys>" in shown
    assert "redis_url='redis://:***@redis:6379/0'" in shown
    assert Config(encryption_key=("k",)).describe()["encryption"] == "on (1 key)"
    assert Config().describe()["encryption"] == "off"
    sentinel = Config(redis_sentinels=(("s", 1),), redis_sentinel_master="m").describe()
    assert sentinel["redis"] == "sentinel m via s:1 db 0"


def test_redis_store_takes_the_gems_key_prefix_ttl_and_own_redis() -> None:
    spec = "big=redis:key_prefix=app:payloads:&ttl=60&url=redis://:s3cret@other:6380/2"
    config = load_config(env={"PATIENT_HTTP_PAYLOAD_STORES": spec})
    assert config.payload_stores == (
        PayloadStoreSpec(
            "big", "redis", ttl=60.0, key_prefix="app:payloads:", url="redis://:s3cret@other:6380/2"
        ),
    )
    assert config.store_urls() == ["redis://:s3cret@other:6380/2"]
    assert "s3cret" not in repr(config.payload_stores[0])
    with pytest.raises(ConfigurationError, match="the redis adapter takes ttl, key_prefix, url"):
        load_config(env={"PATIENT_HTTP_PAYLOAD_STORES": "big=redis:prefix=x"})


@pytest.mark.integration
async def test_redis_store_with_its_own_url_writes_there(redis_url: str) -> None:
    own_url = redis_url.rsplit("/", 1)[0] + "/7"
    config = load_config(
        env={"PATIENT_HTTP_PAYLOAD_STORES": f"big=redis:key_prefix=app:&url={own_url}"}
    )
    async with RedisBridge(redis_url) as bridge, RedisBridge(own_url) as own:
        store = config.payload_settings(bridge, {own_url: own}).stores["big"]
        await store.put("k", "[1]")
    assert redis.Redis.from_url(own_url).get("app:k") == b"[1]"
    assert redis.Redis.from_url(redis_url).exists("app:k") == 0


def test_processes_auto_counts_the_cpus_this_process_may_use() -> None:
    # the affinity mask (taskset, a container's cpuset), not the machine's CPU count
    assert load_config(env={}, flags={"processes": "auto"}).processes == len(
        os.sched_getaffinity(0)
    )
    assert load_config(env={}, flags={"processes": "3"}).processes == 3
    (line,) = problems(flags={"processes": "many"})
    assert 'is not an integer ≥ 1 or "auto"' in line
