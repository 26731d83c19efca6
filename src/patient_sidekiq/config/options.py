"""Configuration options: what each one is called, accepts and means.

Role: the option table the CLI, the README and error messages are built from; each option's
values are read by its parser in :mod:`patient_sidekiq.config.parsers`.
:mod:`patient_sidekiq.config.model` builds the table from
:class:`~patient_sidekiq.config.model.Config`'s defaults and does the layering and the checks
between options; this module never imports it, so the two form no import cycle.

Keys: none.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from patient_sidekiq.config import parsers
from patient_sidekiq.config.parsers import (
    DEFAULT_SENTINEL_PORT,
    InvalidValue,
    PayloadStoreSpec,
    PreprocessorSpec,
    SecretSpec,
    available_cpus,
    describe_store,
)

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
    switch: bool = False
    """A boolean: its one flag is the pair ``--x/--no-x``, which takes no value."""

    @property
    def flag(self) -> str:
        """The flag as a usage line shows it: ``-q/--queue NAME[,WEIGHT]``, ``--x/--no-x``."""
        return f"{'/'.join(self.flags)} {self.metavar}".rstrip()

    @property
    def default_text(self) -> str:
        """The default as the help and the README show it (``—`` when there is none)."""
        return _default_text(self)


@dataclass(frozen=True)
class Option:
    """One option: its metadata and the parser of its values (of one item, for lists)."""

    info: OptionInfo
    parse: Callable[[Any], Any]
    separator: str | None = None  # list fields: how the environment separates items
    strip: bool = True
    secret: bool = False


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
        kebab = name.replace("_", "-")
        switch = parse is parsers.boolean
        if switch:
            # click's flag pair: no value to type, and "neither given" leaves the option to
            # the file and the environment.
            flags, metavar = (f"--{kebab}/--no-{kebab}",), ""
        info = OptionInfo(
            name=name,
            kind=kind,
            default=default,
            env=(ENV_PREFIX + name.upper(), *env),
            flags=flags or ("--" + kebab,),
            metavar=metavar,
            help=help,
            repeatable=separator is not None,
            toml=toml or f"{name} = {_toml_literal(default)}",
            switch=switch,
        )
        return Option(info, parse, separator, strip, secret)

    numbers = "SECONDS"
    options = (
        option("redis_url", parsers.redis_url, "a redis://, rediss:// or unix:// URL",
               "Redis to use (with Sentinel: db, password and TLS only)",
               metavar="URL", env=("REDIS_URL",)),
        option("redis_sentinels", parsers.sentinel, "HOST[:PORT] items",
               "Redis Sentinel to ask for the master (repeatable)",
               flags=("--redis-sentinel",), metavar="HOST:PORT", separator=",",
               toml='redis_sentinels = ["s1:26379", "s2:26379"]'),
        option("redis_sentinel_master", parsers.optional(parsers.identifier), "a name",
               "master name the sentinels know", metavar="NAME",
               toml='redis_sentinel_master = "mymaster"'),
        option("queues", parsers.queue, "NAME[,WEIGHT] items, WEIGHT an integer ≥ 0",
               "queues of RequestWorker jobs; all weights 0 = strict order, else weighted",
               flags=("-q", "--queue"), metavar="NAME[,WEIGHT]", separator=";",
               toml='queues = ["patient_http,2", "low"]'),
        option("callback_queue", parsers.identifier, "a queue name",
               "queue of CallbackWorker jobs for Ruby callbacks", metavar="NAME"),
        option("python_callback_queue", parsers.identifier, "a queue name",
               "queue of CallbackWorker jobs for Python callbacks", metavar="NAME"),
        option("require", parsers.module, "module names or .py files",
               "modules to import at start (Python callbacks; repeatable)",
               flags=("-r", "--require"), metavar="MODULE", separator=",",
               toml='require = ["myapp.callbacks"]'),
        option("max_connections", parsers.integer(1), "an integer ≥ 1",
               "HTTP requests in flight at once (also the job concurrency)",
               flags=("-c", "--max-connections"), metavar="N"),
        option("request_timeout", parsers.seconds, _SECONDS, "default timeout of a whole request",
               metavar=numbers),
        option("connection_timeout", parsers.optional(parsers.seconds), f"{_SECONDS}, or unset",
               "timeout to open a connection (default: request_timeout)", metavar=numbers,
               toml="connection_timeout = 5.0"),
        option("shutdown_timeout", parsers.seconds, _SECONDS,
               "how long running requests may finish at shutdown",
               flags=("-t", "--shutdown-timeout"), metavar=numbers),
        option("max_response_size", parsers.integer(1), "an integer ≥ 1 (bytes)",
               "largest response body accepted", metavar="BYTES"),
        option("max_redirects", parsers.integer(0), "an integer ≥ 0",
               "redirects followed (0 = none)", metavar="N"),
        option("retries", parsers.integer(0), "an integer ≥ 0",
               "retries of a request after a connection failure", metavar="N"),
        option("proxy_url", parsers.optional(parsers.http_url),
               "an http:// or https:// URL, or unset",
               "HTTP proxy for every request", metavar="URL",
               toml='proxy_url = "http://proxy:3128"'),
        option("user_agent", parsers.text, "a string", "default User-Agent header", metavar="TEXT"),
        option("raise_error_responses", parsers.boolean, "a boolean",
               "treat non-2xx responses as errors by default"),
        option("protocol", parsers.choice("auto", "http1", "http2"), "auto, http1 or http2",
               "HTTP version (auto: HTTP/2 when the server offers it over TLS)",
               metavar="auto|http1|http2"),
        option("verify_ssl", parsers.boolean, "a boolean", "verify TLS certificates"),
        option("ca_bundle", parsers.optional(parsers.existing_file), "a file path, or unset",
               "CA certificates to trust instead of the system's", metavar="FILE",
               toml='ca_bundle = "/etc/ssl/ca.pem"'),
        option("heartbeat_interval", parsers.seconds, f"{_SECONDS}, < orphan_threshold",
               "how often in-flight requests are marked alive", metavar=numbers),
        option("orphan_threshold", parsers.seconds, f"{_SECONDS}, > heartbeat_interval",
               "age after which another process's request counts as orphaned",
               metavar=numbers),
        option("payload_store_threshold", parsers.integer(1), "an integer ≥ 1 (bytes)",
               "payloads longer than this go to the default payload store", metavar="BYTES"),
        option("encryption_key", parsers.key, "non-empty keys",
               "payload encryption keys: the first encrypts, all decrypt (repeatable)",
               metavar="KEY", separator=",", strip=False, secret=True,
               toml='encryption_key = ["new-key", "old-key"]'),
        option("payload_stores", parsers.payload_store,
               "NAME=redis[:TTL], NAME=redis:ttl=S&key_prefix=P&url=URL, NAME=file:DIR, "
               "NAME=s3:bucket=B&key_prefix=P&endpoint_url=U&region=R or "
               "NAME=active_record:url=URL&table=T items",
               "external payload stores (repeatable; the last is the default)",
               flags=("--payload-store",), metavar="SPEC", separator=",",
               toml='payload_stores.big = { adapter = "redis", ttl = 86400, key_prefix = "app:" }'),
        option("secrets", parsers.secret, "NAME=env:VARIABLE or NAME=file:PATH items",
               "secrets requests reference as {\"$secret\": NAME}, read at each use "
               "(repeatable; never logged)",
               flags=("--secret",), metavar="NAME=env:VAR", separator=",",
               toml='secrets.openai = { env = "OPENAI_API_KEY" }'),
        option("preprocessors", parsers.preprocessor, "NAME=BUILTIN[:key=value&…] items",
               "built-in preprocessors to register, like aws_sigv4 (repeatable)",
               flags=("--preprocessor",), metavar="NAME=BUILTIN[:OPTIONS]", separator=",",
               toml='preprocessors.sign = { builtin = "aws_sigv4", service = "execute-api" }'),
        option("default_payload_store", parsers.optional(parsers.identifier),
               "a configured store's name",
               "store for new large payloads (default: the last configured)",
               metavar="NAME", toml='default_payload_store = "big"'),
        option("callback_concurrency", parsers.integer(1), "an integer ≥ 1",
               "Python callback jobs run at once", metavar="N"),
        option("max_retries", parsers.integer(0), "an integer ≥ 0",
               "retries of a failed job before it is dead (Sidekiq's default)", metavar="N"),
        option("backtrace", parsers.backtrace, "true, false or a number of lines",
               "backtrace lines a failing Python callback's retry/dead entry keeps when its "
               "job sets no backtrace option (Sidekiq's job option)", metavar="true|false|N"),
        option("sidekiq_version", parsers.sidekiq_version, "6, 7 or 8",
               "Sidekiq of the cluster: 8 writes millisecond timestamps, 8's backoff",
               metavar="6|7|8"),
        option("tag", parsers.text, "a string", "tag shown in the Web UI's process list",
               flags=("-g", "--tag"), metavar="TAG"),
        option("processes", parsers.processes, 'an integer ≥ 1 or "auto" (the CPUs it may use)',
               "worker processes to run", metavar="N|auto"),
        option("log_format", parsers.choice("plain", "json"), "plain or json",
               "log line format", metavar="plain|json"),
        option("log_level", parsers.choice("debug", "info", "warning", "error",
                                    aliases={"warn": "warning"}),
               "debug, info, warning or error", "least severe level logged",
               metavar="LEVEL"),
        option("log_requests", parsers.choice("info", "debug", "off"), "info, debug or off",
               "level of the line logged for each finished request (off: none)",
               metavar="info|debug|off"),
        option("metrics_port", parsers.optional(parsers.port), "a TCP port, or unset",
               "serve Prometheus /metrics and /health on this port (process N of --processes "
               "on PORT+N)", metavar="PORT", toml="metrics_port = 9394"),
        option("metrics_host", parsers.identifier, "an address",
               "address the metrics and health endpoint listens on", metavar="ADDRESS"),
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
    if info.name in ("encryption_key", "secrets"):
        return "—"  # never a secret, even should a default ever hold one
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
            f"{cell(info.default_text)} | {cell(meaning)} ({cell(info.kind)}) |"
        )
    return "\n".join(lines) + "\n"
