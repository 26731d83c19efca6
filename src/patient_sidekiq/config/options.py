"""Configuration options: what each one is called, accepts and means, and how values are read.

Role: the option table the CLI, the README and error messages are built from, and one value
parser per option. A parser takes a value as any source gives it (TOML value, environment
string, flag string) and returns it typed and normalised, or raises :class:`InvalidValue`
saying what it is not. :mod:`patient_sidekiq.config.model` builds the table from
:class:`~patient_sidekiq.config.model.Config`'s defaults and does the layering and the checks
between options; this module never imports it, so the two form no import cycle.

Keys: none.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from patient_sidekiq.redis_io.redis_target import REDIS_SCHEMES, hide_password
from patient_sidekiq.registry.registrations import PreprocessorSpec, SecretSpec
from patient_sidekiq.wire.payload_store import PayloadStoreSpec
from patient_sidekiq.wire.sql_store import DEFAULT_TABLE

__all__ = [
    "DEFAULT_SENTINEL_PORT",
    "ENV_PREFIX",
    "InvalidValue",
    "Option",
    "OptionInfo",
    "PayloadStoreSpec",
    "PreprocessorSpec",
    "SecretSpec",
    "available_cpus",
    "describe_store",
    "option_table",
    "options_markdown",
]

ENV_PREFIX: Final = "PATIENT_HTTP_"
DEFAULT_SENTINEL_PORT: Final = 26379


def describe_store(spec: PayloadStoreSpec) -> str:
    """One store as logs and error messages show it: ``big (redis, ttl 60.0 s)``."""
    if spec.adapter == "file":
        return f"{spec.name} (file: {spec.directory})"
    if spec.adapter == "s3":
        where = f"s3://{spec.bucket}/{spec.key_prefix or ''}"
        extra = f", endpoint {spec.endpoint_url}" if spec.endpoint_url else ""
        return f"{spec.name} ({where}{extra})"
    if spec.adapter == "active_record":
        return f"{spec.name} (active_record: {hide_password(spec.url or '')} table {spec.table})"
    details = ["redis"]
    if spec.url:
        details.append(f"url {hide_password(spec.url)}")
    if spec.key_prefix is not None:
        details.append(f"key_prefix {spec.key_prefix!r}")
    if spec.ttl:
        details.append(f"ttl {spec.ttl} s")
    return f"{spec.name} ({', '.join(details)})"


SQL_SCHEMES: Final = ("sqlite", "sqlite3", "postgresql", "postgres")


# --- option metadata (for the CLI, the README and error messages) ---


@dataclass(frozen=True)
class OptionInfo:
    """What the CLI and the README need to know about one option."""

    name: str
    """Field of :class:`~patient_sidekiq.config.model.Config`, TOML key."""
    kind: str
    """What values are accepted, e.g. ``"an integer ≥ 1"``."""
    default: object
    env: tuple[str, ...]
    """Environment variables, highest priority first."""
    flags: tuple[str, ...]
    """Command-line spellings, short first (``("-c", "--max-connections")``)."""
    metavar: str
    help: str
    repeatable: bool = False
    toml: str = ""
    """An example TOML line."""

    @property
    def flag(self) -> str:
        """The flag as a usage line shows it: ``-q/--queue NAME[,WEIGHT]``."""
        return f"{'/'.join(self.flags)} {self.metavar}"


class InvalidValue(Exception):
    """One value is not acceptable; the message says what it is not (``"is not …"``)."""


@dataclass(frozen=True)
class Option:
    """One option: its metadata and the parser of its values (of one item, for lists)."""

    info: OptionInfo
    parse: Callable[[Any], Any]
    separator: str | None = None  # list fields: how the environment separates items
    strip: bool = True
    secret: bool = False


def _integer(minimum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
            return value
        raise InvalidValue(f"is not an integer ≥ {minimum}")

    return parse


def _seconds(value: Any) -> float:
    number: object = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if (
        isinstance(number, int | float)
        and not isinstance(number, bool)
        and math.isfinite(number)
        and number > 0
    ):
        return float(number)
    raise InvalidValue("is not a number of seconds > 0")


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse_optional(value: Any) -> Any:
        return None if value is None or value == "" else parse(value)

    return parse_optional


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    words = {"true": True, "1": True, "yes": True, "on": True}
    words |= {"false": False, "0": False, "no": False, "off": False}
    if isinstance(value, str) and value.strip().lower() in words:
        return words[value.strip().lower()]
    raise InvalidValue("is not a boolean (true/false, yes/no, 1/0)")


def _choice(*choices: str, aliases: Mapping[str, str] | None = None) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = value.strip().lower() if isinstance(value, str) else None
        text = (aliases or {}).get(text or "", text)
        if text in choices:
            return text
        raise InvalidValue(f"is not one of {', '.join(choices)}")

    return parse


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise InvalidValue("is not a string")


def _name(value: Any) -> str:
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise InvalidValue("is not a non-empty name")


def _redis_url(value: Any) -> str:
    if isinstance(value, str) and urlsplit(value.strip()).scheme in REDIS_SCHEMES:
        return value.strip()
    raise InvalidValue("is not a redis://, rediss:// or unix:// URL")


def _http_url(value: Any) -> str:
    # The gem's rule: an HTTP or HTTPS URL (with a host).
    if isinstance(value, str):
        parts = urlsplit(value.strip())
        if parts.scheme in ("http", "https") and parts.hostname:
            return value.strip()
    raise InvalidValue("is not an http:// or https:// URL")


def _existing_file(value: Any) -> str:
    if isinstance(value, str) and value and Path(value).is_file():
        return value
    raise InvalidValue("is not an existing file")


def _module(value: Any) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", text) or text.endswith(".py"):
        return text
    raise InvalidValue("is not a module name (package.module) or a .py file")


def _key(value: Any) -> str:
    if isinstance(value, str) and value:
        return value  # never stripped: a key is a password, spaces included
    raise InvalidValue("is not a non-empty key")


def _queue(value: Any) -> tuple[str, int]:
    name: object = value
    weight: object = 0
    if isinstance(value, str):
        name, comma, given = value.partition(",")
        weight = given if comma else 0  # "name," (an empty weight) is refused
    elif isinstance(value, Mapping) and set(value) <= {"name", "weight"}:
        name, weight = value.get("name"), value.get("weight", 0)
    elif isinstance(value, Sequence) and len(value) == 2:
        name, weight = value
    try:
        return (_name(name), _integer(0)(weight))
    except InvalidValue:
        raise InvalidValue("is not a queue NAME[,WEIGHT] (WEIGHT an integer ≥ 0)") from None


def _sentinel(value: Any) -> tuple[str, int]:
    host: object = value
    port: object = DEFAULT_SENTINEL_PORT
    if isinstance(value, str):
        text = value.strip()
        bracketed = re.fullmatch(r"\[([^\]]+)\](?::(.*))?", text)
        if bracketed:
            host, port = bracketed[1], bracketed[2] or port
        elif text.count(":") == 1:
            host, port = text.split(":")
    elif isinstance(value, Mapping) and set(value) <= {"host", "port"}:
        host, port = value.get("host"), value.get("port", port)
    elif isinstance(value, Sequence) and len(value) == 2:
        host, port = value
    try:
        number = _integer(1)(port)
        if number <= 65535:
            return (_name(host), number)
    except InvalidValue:
        pass
    raise InvalidValue(
        f"is not a sentinel HOST[:PORT] (PORT 1-65535, default {DEFAULT_SENTINEL_PORT})"
    )


_STORE_FORMS: Final = (
    "a payload store NAME=redis[:TTL_SECONDS], NAME=redis:ttl=S&key_prefix=P&url=redis://…, "
    "NAME=file:DIRECTORY, NAME=s3:bucket=B[&key_prefix=P&endpoint_url=U&region=R] or "
    "NAME=active_record:url=sqlite:///FILE|postgresql://…[&table=T]"
)
# Each adapter's options, named as the gem's register_payload_store takes them (plus what
# Ruby gives as objects: the S3 endpoint and region, the database URL and table).
_STORE_KEYS: Final[Mapping[str, tuple[str, ...]]] = {
    "redis": ("ttl", "key_prefix", "url"),
    "file": ("directory",),
    "s3": ("bucket", "key_prefix", "endpoint_url", "region"),
    "active_record": ("url", "table"),
}


def _store_from_text(value: str) -> dict[str, Any]:
    given_name, equals, rest = value.partition("=")
    kind, _, argument = rest.partition(":")
    kind = kind.strip()
    if not equals:
        raise InvalidValue(f"is not {_STORE_FORMS}")
    spec: dict[str, Any] = {"name": given_name, "adapter": kind}
    if kind not in _STORE_KEYS:
        return spec  # refused by _store, which names the adapters
    if argument and kind != "file" and (kind != "redis" or "=" in argument):
        # key=value pairs joined by "&" (the environment's lists are comma-separated);
        # a value may itself hold "=" (a URL's query), so only the first one splits.
        allowed = _STORE_KEYS.get(kind, ())
        for item in argument.split("&"):
            key, has_value, text = item.partition("=")
            if not has_value or key.strip() not in allowed:
                raise InvalidValue(f"has {item!r}: the {kind} adapter takes {', '.join(allowed)}")
            spec[key.strip()] = text
    elif argument:
        spec["directory" if kind == "file" else "ttl"] = argument
    return spec


def _store(value: Any) -> PayloadStoreSpec:
    if isinstance(value, str):
        value = _store_from_text(value)
    if isinstance(value, PayloadStoreSpec):
        value = {k: v for k, v in dataclasses.asdict(value).items() if v is not None}
    if not isinstance(value, Mapping):
        raise InvalidValue(f"is not {_STORE_FORMS}")
    try:
        name = _name(value.get("name"))
    except InvalidValue:
        raise InvalidValue(f"is not {_STORE_FORMS} (the name is empty)") from None
    adapter = value.get("adapter")
    if not isinstance(adapter, str) or adapter not in _STORE_KEYS:
        raise InvalidValue(f"is not {_STORE_FORMS} (adapter must be {', '.join(_STORE_KEYS)})")
    allowed = _STORE_KEYS[adapter]
    unknown = set(value) - {"name", "adapter", *allowed}
    if unknown:
        raise InvalidValue(
            f"is a {adapter} store, which takes {', '.join(allowed)}, "
            f"not {', '.join(sorted(map(str, unknown)))}"
        )
    for key in allowed:
        if key != "ttl" and value.get(key) is not None and not isinstance(value[key], str):
            raise InvalidValue(f"has a {key} that is not a string")
    if adapter == "file":
        directory = value.get("directory")
        if not directory:
            raise InvalidValue("is a file store without a directory (NAME=file:DIRECTORY)")
        return PayloadStoreSpec(name, "file", directory)
    if adapter == "s3":
        if not value.get("bucket"):
            raise InvalidValue("is an s3 store without a bucket (NAME=s3:bucket=B)")
        endpoint = value.get("endpoint_url")
        if endpoint is not None:
            try:
                endpoint = _http_url(endpoint)
            except InvalidValue:
                raise InvalidValue("has an endpoint_url that is not an http(s):// URL") from None
        return PayloadStoreSpec(
            name, "s3", key_prefix=value.get("key_prefix"), bucket=value["bucket"],
            endpoint_url=endpoint, region=value.get("region") or None,
        )  # fmt: skip
    if adapter == "active_record":
        url = value.get("url")
        if not isinstance(url, str) or urlsplit(url).scheme not in SQL_SCHEMES:
            raise InvalidValue(
                "is an active_record store whose url is not sqlite:///FILE or postgresql://…"
            )
        table = value.get("table") or DEFAULT_TABLE
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", table):
            raise InvalidValue(f"has a table {table!r} that is not an SQL identifier")
        return PayloadStoreSpec(name, "active_record", url=url, table=table)
    ttl, key_prefix, url = value.get("ttl"), value.get("key_prefix"), value.get("url")
    try:
        seconds = _optional(_seconds)(ttl)
    except InvalidValue:
        raise InvalidValue("has a ttl that is not a number of seconds > 0") from None
    if seconds is not None and seconds < 0.0005:  # Redis refuses PX 0
        raise InvalidValue("has a ttl under 0.0005 s (Redis expiries are whole milliseconds)")
    if url is not None:
        try:
            url = _redis_url(url)
        except InvalidValue:
            raise InvalidValue(
                "has a url that is not a redis://, rediss:// or unix:// URL"
            ) from None
    return PayloadStoreSpec(name, "redis", ttl=seconds, key_prefix=key_prefix, url=url)


_SECRET_FORMS: Final = (
    'a secret NAME=env:VARIABLE or NAME=file:PATH (TOML also NAME = { value = "…" })'
)


_SECRET_SOURCES: Final[tuple[Literal["env", "file", "value"], ...]] = ("env", "file", "value")


def _secret_spec(value: Any) -> SecretSpec:
    if isinstance(value, SecretSpec):
        return value
    # Literal values only from a TOML table: on a command line or in the environment they
    # would show in `ps` and in /proc/<pid>/environ of every child.
    if isinstance(value, str):
        given, equals, rest = value.partition("=")
        kind, colon, text = rest.partition(":")
        if not (equals and colon and kind.strip() in ("env", "file")):
            raise InvalidValue(f"is not {_SECRET_FORMS}")
        value = {"name": given, kind.strip(): text}
    if isinstance(value, Mapping):
        name = value.get("name")
        sources = [key for key in _SECRET_SOURCES if key in value]
        reference = value.get(sources[0]) if len(sources) == 1 else None
        if (
            isinstance(name, str)
            and name.strip()
            and set(value) == {"name", *sources}
            and isinstance(reference, str)
            and (reference.strip() or sources[0] == "value")
        ):
            source = sources[0]
            kept = reference if source == "value" else reference.strip()
            return SecretSpec(name.strip(), source, kept)
    raise InvalidValue(f"is not {_SECRET_FORMS}")


_PREPROCESSOR_FORMS: Final = (
    "a preprocessor NAME=BUILTIN[:key=value&key=value] (BUILTIN: aws_sigv4)"
)


def _preprocessor_spec(value: Any) -> PreprocessorSpec:
    if isinstance(value, PreprocessorSpec):
        return value
    if isinstance(value, str):
        given, equals, rest = value.partition("=")
        kind, _, argument = rest.partition(":")
        if not equals:
            raise InvalidValue(f"is not {_PREPROCESSOR_FORMS}")
        table: dict[str, Any] = {"name": given, "builtin": kind.strip()}
        for item in filter(None, argument.split("&")):
            key, has_value, text = item.partition("=")
            if not has_value or key.strip() in ("name", "builtin"):
                raise InvalidValue(f"has {item!r}, not key=value")
            table[key.strip()] = text.strip()
        value = table
    if isinstance(value, Mapping):
        name: object = value.get("name")
        builtin: object = value.get("builtin")
        others = {k: v for k, v in value.items() if k not in ("name", "builtin")}
        if (
            isinstance(name, str)
            and name.strip()
            and isinstance(builtin, str)
            and builtin.strip()
            and all(isinstance(v, str | bool | int | float) for v in others.values())
        ):
            options = tuple(
                sorted(
                    (str(k), str(v).lower() if isinstance(v, bool) else str(v))
                    for k, v in others.items()
                )
            )
            return PreprocessorSpec(name.strip(), builtin.strip(), options)
    raise InvalidValue(f"is not {_PREPROCESSOR_FORMS}")


def available_cpus() -> int:
    """The CPUs this process may run on: ``--processes auto``.

    The affinity mask honours taskset and a container's cpuset, which ``os.cpu_count``
    (the whole machine's) does not.
    """
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _processes(value: Any) -> int:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return available_cpus()
    try:
        return _integer(1)(value)
    except InvalidValue:
        raise InvalidValue('is not an integer ≥ 1 or "auto"') from None


def _sidekiq_version(value: Any) -> str:
    text = str(value).strip() if isinstance(value, str | int | float) else ""
    major = text.split(".")[0]
    if not isinstance(value, bool) and major in ("6", "7", "8") and re.fullmatch(r"[\d.]+", text):
        return major
    raise InvalidValue('is not a Sidekiq version 6, 7 or 8 (like "7" or "7.3")')


_SECONDS: Final = "a number of seconds > 0"


def option_table(defaults: Mapping[str, object]) -> dict[str, Option]:
    """Every option by name, in :class:`~patient_sidekiq.config.model.Config` field order.

    ``defaults`` are Config's field defaults; they are passed in rather than imported
    because :mod:`patient_sidekiq.config.model` is built on this module.
    """

    def option(
        name: str,
        parse: Callable[[Any], Any],
        kind: str,
        help: str,
        *,
        flags: tuple[str, ...] = (),
        metavar: str = "VALUE",
        env: tuple[str, ...] = (),
        separator: str | None = None,
        strip: bool = True,
        secret: bool = False,
        toml: str = "",
    ) -> Option:
        default = defaults[name]
        info = OptionInfo(
            name=name,
            kind=kind,
            default=default,
            env=(ENV_PREFIX + name.upper(), *env),
            flags=flags or ("--" + name.replace("_", "-"),),
            metavar=metavar,
            help=help,
            repeatable=separator is not None,
            toml=toml or f"{name} = {_toml_literal(default)}",
        )
        return Option(info, parse, separator, strip, secret)

    numbers = "SECONDS"
    options = (
        option("redis_url", _redis_url, "a redis://, rediss:// or unix:// URL",
               "Redis to use (with Sentinel: db, password and TLS only)",
               metavar="URL", env=("REDIS_URL",)),
        option("redis_sentinels", _sentinel, "HOST[:PORT] items",
               "Redis Sentinel to ask for the master (repeatable)",
               flags=("--redis-sentinel",), metavar="HOST:PORT", separator=",",
               toml='redis_sentinels = ["s1:26379", "s2:26379"]'),
        option("redis_sentinel_master", _optional(_name), "a name",
               "master name the sentinels know", metavar="NAME",
               toml='redis_sentinel_master = "mymaster"'),
        option("queues", _queue, "NAME[,WEIGHT] items, WEIGHT an integer ≥ 0",
               "queues of RequestWorker jobs; all weights 0 = strict order, else weighted",
               flags=("-q", "--queue"), metavar="NAME[,WEIGHT]", separator=";",
               toml='queues = ["patient_http,2", "low"]'),
        option("callback_queue", _name, "a queue name",
               "queue of CallbackWorker jobs for Ruby callbacks", metavar="NAME"),
        option("python_callback_queue", _name, "a queue name",
               "queue of CallbackWorker jobs for Python callbacks", metavar="NAME"),
        option("require", _module, "module names or .py files",
               "modules to import at start (Python callbacks; repeatable)",
               flags=("-r", "--require"), metavar="MODULE", separator=",",
               toml='require = ["myapp.callbacks"]'),
        option("max_connections", _integer(1), "an integer ≥ 1",
               "HTTP requests in flight at once (also the job concurrency)",
               flags=("-c", "--max-connections"), metavar="N"),
        option("request_timeout", _seconds, _SECONDS, "default timeout of a whole request",
               metavar=numbers),
        option("connection_timeout", _optional(_seconds), f"{_SECONDS}, or unset",
               "timeout to open a connection (default: request_timeout)", metavar=numbers,
               toml="connection_timeout = 5.0"),
        option("shutdown_timeout", _seconds, _SECONDS,
               "how long running requests may finish at shutdown",
               flags=("-t", "--shutdown-timeout"), metavar=numbers),
        option("max_response_size", _integer(1), "an integer ≥ 1 (bytes)",
               "largest response body accepted", metavar="BYTES"),
        option("max_redirects", _integer(0), "an integer ≥ 0",
               "redirects followed (0 = none)", metavar="N"),
        option("retries", _integer(0), "an integer ≥ 0",
               "retries of a request after a connection failure", metavar="N"),
        option("proxy_url", _optional(_http_url), "an http:// or https:// URL, or unset",
               "HTTP proxy for every request", metavar="URL",
               toml='proxy_url = "http://proxy:3128"'),
        option("user_agent", _text, "a string", "default User-Agent header", metavar="TEXT"),
        option("raise_error_responses", _boolean, "a boolean",
               "treat non-2xx responses as errors by default", metavar="BOOL"),
        option("protocol", _choice("auto", "http1", "http2"), "auto, http1 or http2",
               "HTTP version (auto: HTTP/2 when the server offers it over TLS)",
               metavar="auto|http1|http2"),
        option("verify_ssl", _boolean, "a boolean", "verify TLS certificates", metavar="BOOL"),
        option("ca_bundle", _optional(_existing_file), "a file path, or unset",
               "CA certificates to trust instead of the system's", metavar="FILE",
               toml='ca_bundle = "/etc/ssl/ca.pem"'),
        option("heartbeat_interval", _seconds, f"{_SECONDS}, < orphan_threshold",
               "how often in-flight requests are marked alive", metavar=numbers),
        option("orphan_threshold", _seconds, f"{_SECONDS}, > heartbeat_interval",
               "age after which another process's request counts as orphaned",
               metavar=numbers),
        option("payload_store_threshold", _integer(1), "an integer ≥ 1 (bytes)",
               "payloads longer than this go to the default payload store", metavar="BYTES"),
        option("encryption_key", _key, "non-empty keys",
               "payload encryption keys: the first encrypts, all decrypt (repeatable)",
               metavar="KEY", separator=",", strip=False, secret=True,
               toml='encryption_key = ["new-key", "old-key"]'),
        option("payload_stores", _store,
               "NAME=redis[:TTL], NAME=redis:ttl=S&key_prefix=P&url=URL, NAME=file:DIR, "
               "NAME=s3:bucket=B&key_prefix=P&endpoint_url=U&region=R or "
               "NAME=active_record:url=URL&table=T items",
               "external payload stores (repeatable; the last is the default)",
               flags=("--payload-store",), metavar="SPEC", separator=",",
               toml='payload_stores.big = { adapter = "redis", ttl = 86400, key_prefix = "app:" }'),
        option("secrets", _secret_spec, "NAME=env:VARIABLE or NAME=file:PATH items",
               "secrets requests reference as {\"$secret\": NAME}, read at each use "
               "(repeatable; never logged)",
               flags=("--secret",), metavar="NAME=env:VAR", separator=",",
               toml='secrets.openai = { env = "OPENAI_API_KEY" }'),
        option("preprocessors", _preprocessor_spec, "NAME=BUILTIN[:key=value&…] items",
               "built-in preprocessors to register, like aws_sigv4 (repeatable)",
               flags=("--preprocessor",), metavar="NAME=BUILTIN[:OPTIONS]", separator=",",
               toml='preprocessors.sign = { builtin = "aws_sigv4", service = "execute-api" }'),
        option("default_payload_store", _optional(_name), "a configured store's name",
               "store for new large payloads (default: the last configured)",
               metavar="NAME", toml='default_payload_store = "big"'),
        option("callback_concurrency", _integer(1), "an integer ≥ 1",
               "Python callback jobs run at once", metavar="N"),
        option("max_retries", _integer(0), "an integer ≥ 0",
               "retries of a failed job before it is dead (Sidekiq's default)", metavar="N"),
        option("sidekiq_version", _sidekiq_version, "6, 7 or 8",
               "Sidekiq of the cluster: 8 writes millisecond timestamps, 8's backoff",
               metavar="6|7|8"),
        option("tag", _text, "a string", "tag shown in the Web UI's process list",
               flags=("-g", "--tag"), metavar="TAG"),
        option("processes", _processes, 'an integer ≥ 1 or "auto" (the CPUs it may use)',
               "worker processes to run", metavar="N|auto"),
        option("log_format", _choice("plain", "json"), "plain or json",
               "log line format", metavar="plain|json"),
        option("log_level", _choice("debug", "info", "warning", "error",
                                    aliases={"warn": "warning"}),
               "debug, info, warning or error", "least severe level logged",
               metavar="LEVEL"),
    )  # fmt: skip
    return {option.info.name: option for option in options}


def _toml_literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[]"
    return json.dumps(value, ensure_ascii=False)


# --- documentation ---


def _default_text(info: OptionInfo) -> str:
    if info.name == "processes":
        return "1"
    if info.name == "queues":
        return "patient_http"
    if info.name == "default_payload_store":
        return "the last store"
    if info.default is None or info.default == ():
        return "—"
    if isinstance(info.default, bool):
        return str(info.default).lower()
    return f'"{info.default}"' if info.default == "" else str(info.default)


def options_markdown(options: Mapping[str, Option]) -> str:
    """The README's options table of ``options`` (option, flag, env, TOML, default, meaning)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [
        "| option | flag | env | TOML | default | meaning |",
        "|---|---|---|---|---|---|",
        "| config file | `--config FILE` | `PATIENT_HTTP_CONFIG` | — | — | TOML file to read |",
    ]
    for option in options.values():
        info = option.info
        env = ", ".join(f"`{name}`" for name in info.env)
        if info.name == "redis_url":
            env += " (or the variable `REDIS_PROVIDER` names)"
        meaning = info.help
        if info.repeatable:
            meaning += f"; env items separated by `{option.separator}`"
        lines.append(
            f"| `{info.name}` | `{cell(info.flag)}` | {env} | `{cell(info.toml)}` | "
            f"{cell(_default_text(info))} | {cell(meaning)} ({cell(info.kind)}) |"
        )
    return "\n".join(lines) + "\n"
