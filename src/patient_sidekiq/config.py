"""Configuration: one frozen :class:`Config`, built once from every source, passed in.

Sources, lowest priority first: the defaults below, a TOML file, environment variables,
command-line flags. A higher source replaces a value whole (a list given by a flag replaces
the file's list; nothing is appended).

* TOML keys are the field names (``max_connections = 64``). Lists: ``queues = ["a,2", "b"]``
  or ``[[queues]]`` tables with ``name``/``weight``; ``encryption_key = "k"`` or
  ``["new", "old"]``; stores as ``[payload_stores.NAME]`` tables (``adapter``, ``directory``,
  ``ttl``) or ``["NAME=redis:60"]``. The file itself: ``config_file=`` or
  ``PATIENT_HTTP_CONFIG``.
* Environment: ``PATIENT_HTTP_<FIELD>`` for every field. Lists are comma-separated, except
  queues, whose items contain a comma already: ``PATIENT_HTTP_QUEUES="patient_http,3;low"``
  separates queues with ``;``. An empty variable counts as unset. Sidekiq's conventions work
  too: ``REDIS_URL`` and ``REDIS_PROVIDER`` (the name of the variable holding the URL); a
  ``PATIENT_HTTP_REDIS_URL`` wins over both.
* Flags (the CLI passes only what the user gave): values typed or in the string forms the
  environment uses, one item per string for repeatable flags.

Every problem is collected and reported in ONE :class:`ConfigurationError`, one line each,
naming the option, where the value came from and what is accepted. A ``PATIENT_HTTP_*``
variable that is not ours but close to one of ours (a typo) is a problem too; any other
unknown ``PATIENT_HTTP_*`` variable is only logged, since the same environment may serve
other tools that share the gem's prefix.

Keys: none (the builders create objects; none of them connects to Redis).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from .encryption import MessageEncryptor
from .errors import ConfigurationError
from .http_client import HttpSettings
from .job import TimestampDialect
from .launcher import WorkerSettings
from .packing import PayloadSettings
from .payload_store import FilePayloadStore, PayloadStore, RedisPayloadStore
from .redis_bridge import RedisBridge
from .redis_target import REDIS_SCHEMES, RedisTarget, hide_password
from .request_worker import CallbackRouting, RequestWorkerSettings

__all__ = [
    "FIELDS",
    "Config",
    "OptionInfo",
    "PayloadStoreSpec",
    "load_config",
    "options_table_markdown",
]

log = logging.getLogger(__name__)

ENV_PREFIX: Final = "PATIENT_HTTP_"
CONFIG_FILE_ENV: Final = "PATIENT_HTTP_CONFIG"
DEFAULT_SENTINEL_PORT: Final = 26379


@dataclass(frozen=True)
class PayloadStoreSpec:
    """One external payload store to register, as the gem's ``register_payload_store``.

    ``redis`` stores use the worker's Redis (``ttl`` seconds, or no expiry); ``file`` stores
    write ``<directory>/<key>.json`` (the directory must be shared with the Ruby side).
    """

    name: str
    adapter: Literal["redis", "file"]
    directory: str | None = None
    ttl: float | None = None


@dataclass(frozen=True, repr=False)
class Config:
    """Every setting of a worker process; see :data:`FIELDS` for each one's meaning."""

    redis_url: str = "redis://localhost:6379/0"
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str | None = None
    queues: tuple[tuple[str, int], ...] = (("patient_http", 0),)
    callback_queue: str = "default"
    python_callback_queue: str = "patient_http_callbacks"
    require: tuple[str, ...] = ()
    max_connections: int = 256
    request_timeout: float = 60.0
    connection_timeout: float | None = None
    shutdown_timeout: float = 25.0
    max_response_size: int = 1_048_576
    max_redirects: int = 5
    retries: int = 3
    proxy_url: str | None = None
    user_agent: str = "PatientHttp"
    raise_error_responses: bool = False
    protocol: Literal["auto", "http1", "http2"] = "auto"
    verify_ssl: bool = True
    ca_bundle: str | None = None
    heartbeat_interval: float = 60.0
    orphan_threshold: float = 300.0
    payload_store_threshold: int = 65_536
    encryption_key: tuple[str, ...] = ()
    payload_stores: tuple[PayloadStoreSpec, ...] = ()
    default_payload_store: str | None = None
    callback_concurrency: int = 10
    max_retries: int = 25
    sidekiq_version: Literal["6", "7", "8"] = "7"
    tag: str = ""
    processes: int = 1
    log_format: Literal["plain", "json"] = "plain"
    log_level: str = "info"

    def __post_init__(self) -> None:
        # Direct construction and replace() get the same checks (and normalisation: a queue
        # given as "name,2" becomes ("name", 2)) as load_config.
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        checked = _check({name: (value, "Config") for name, value in values.items()})
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        # Never a key or a password, not even in a traceback.
        shown = []
        for name in FIELDS:
            value = getattr(self, name)
            if name == "encryption_key":
                shown.append(f"{name}=<{len(value)} keys>")
            elif name in ("redis_url", "proxy_url") and value:
                shown.append(f"{name}={hide_password(value)!r}")
            else:
                shown.append(f"{name}={value!r}")
        return f"Config({', '.join(shown)})"

    def replace(self, **changes: Any) -> Config:
        """Return a copy with ``changes`` applied and checked like every other source."""
        layer = {name: (value, "replace()") for name, value in changes.items()}
        problems = [
            f"{name}: unknown option (from replace())" for name in layer if name not in _OPTIONS
        ]
        if problems:
            raise ConfigurationError("\n".join(problems))
        current = {f.name: (getattr(self, f.name), "Config") for f in dataclasses.fields(self)}
        return Config(**_check(current | layer))

    # --- builders: they create settings objects and never open a connection ---

    def redis_target(self) -> RedisTarget:
        """Where Redis is (Sentinel-managed when sentinels are configured)."""
        return RedisTarget(self.redis_url, self.redis_sentinels, self.redis_sentinel_master)

    def http_settings(self) -> HttpSettings:
        """How requests are executed (no secrets or preprocessors: code registers those)."""
        return HttpSettings(
            request_timeout=self.request_timeout,
            connection_timeout=self.connection_timeout,
            max_response_size=self.max_response_size,
            max_redirects=self.max_redirects,
            retries=self.retries,
            proxy_url=self.proxy_url,
            user_agent=self.user_agent,
            raise_error_responses=self.raise_error_responses,
            protocol=self.protocol,
            verify=self.verify_ssl,
            ca_bundle=self.ca_bundle,
            max_connections=self.max_connections,
        )

    def worker_settings(self, *, identity: str | None = None) -> WorkerSettings:
        """The Sidekiq side of one worker process: queues, capacity, retry dialect."""
        eight = self.sidekiq_version == "8"
        settings = WorkerSettings(
            redis_url=self.redis_target(),
            queues=self.queues,
            concurrency=self.max_connections,
            shutdown_timeout=self.shutdown_timeout,
            tag=self.tag,
            dialect=TimestampDialect.MILLIS if eight else TimestampDialect.SECONDS,
            backoff="8" if eight else "7",
            max_retries=self.max_retries,
        )
        return settings if identity is None else dataclasses.replace(settings, identity=identity)

    def encryptor(self) -> MessageEncryptor | None:
        """The payload encryptor (first key encrypts, every key decrypts), or None."""
        return MessageEncryptor(self.encryption_key) if self.encryption_key else None

    @property
    def default_store_name(self) -> str | None:
        """The store new large payloads go to: the one named, else the last configured."""
        if self.default_payload_store is not None:
            return self.default_payload_store
        return self.payload_stores[-1].name if self.payload_stores else None

    def payload_settings(self, bridge: RedisBridge) -> PayloadSettings:
        """Encryption and external storage; ``redis`` stores write through ``bridge``."""
        stores: dict[str, PayloadStore] = {}
        for spec in self.payload_stores:
            if spec.adapter == "redis":
                stores[spec.name] = RedisPayloadStore(bridge, ttl=spec.ttl)
            else:
                assert spec.directory is not None  # checked when the config was built
                stores[spec.name] = FilePayloadStore(spec.directory)
        return PayloadSettings(
            encryptor=self.encryptor(),
            stores=stores,
            default_store=self.default_store_name,
            store_threshold=self.payload_store_threshold,
        )

    def callback_routing(
        self, is_python_callback: Callable[[str], bool] | None = None
    ) -> CallbackRouting:
        """Where CallbackWorker jobs go; ``is_python_callback`` picks the Python queue."""
        if is_python_callback is None:
            return CallbackRouting(self.callback_queue, self.python_callback_queue)
        return CallbackRouting(self.callback_queue, self.python_callback_queue, is_python_callback)

    def request_worker_settings(
        self, payloads: PayloadSettings, routing: CallbackRouting
    ) -> RequestWorkerSettings:
        """The HTTP processor's settings (HTTP, payloads, routing, in-flight intervals)."""
        return RequestWorkerSettings(
            http=self.http_settings(),
            payloads=payloads,
            routing=routing,
            heartbeat_interval=self.heartbeat_interval,
            orphan_threshold=self.orphan_threshold,
        )

    def describe(self) -> dict[str, object]:
        """Every setting, safe to log: no encryption key, no password."""
        described: dict[str, object] = {"redis": self.redis_target().describe()}
        for info in FIELDS.values():
            if info.name in ("redis_url", "redis_sentinels", "redis_sentinel_master"):
                continue
            value = getattr(self, info.name)
            if info.name == "encryption_key":
                count = len(value)
                described["encryption"] = (
                    f"on ({count} key{'s' if count > 1 else ''})" if count else "off"
                )
            elif info.name == "proxy_url":
                described[info.name] = hide_password(value) if value else None
            elif info.name == "payload_stores":
                described[info.name] = [_describe_store(spec) for spec in value]
            elif info.name == "default_payload_store":
                described[info.name] = self.default_store_name
            else:
                described[info.name] = value
        return described


def _describe_store(spec: PayloadStoreSpec) -> str:
    if spec.adapter == "file":
        return f"{spec.name} (file: {spec.directory})"
    return f"{spec.name} (redis, ttl {spec.ttl} s)" if spec.ttl else f"{spec.name} (redis)"


# --- option metadata (for the CLI, the README and error messages) ---


@dataclass(frozen=True)
class OptionInfo:
    """What the CLI and the README need to know about one option."""

    name: str
    """Field of :class:`Config`, TOML key."""
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


class _Invalid(Exception):
    """One value is not acceptable; the message says what it is not (``"is not …"``)."""


@dataclass(frozen=True)
class _Option:
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
        raise _Invalid(f"is not an integer ≥ {minimum}")

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
    raise _Invalid("is not a number of seconds > 0")


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
    raise _Invalid("is not a boolean (true/false, yes/no, 1/0)")


def _choice(*choices: str, aliases: Mapping[str, str] | None = None) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = value.strip().lower() if isinstance(value, str) else None
        text = (aliases or {}).get(text or "", text)
        if text in choices:
            return text
        raise _Invalid(f"is not one of {', '.join(choices)}")

    return parse


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise _Invalid("is not a string")


def _name(value: Any) -> str:
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise _Invalid("is not a non-empty name")


def _redis_url(value: Any) -> str:
    if isinstance(value, str) and urlsplit(value.strip()).scheme in REDIS_SCHEMES:
        return value.strip()
    raise _Invalid("is not a redis://, rediss:// or unix:// URL")


def _http_url(value: Any) -> str:
    # The gem's rule: an HTTP or HTTPS URL (with a host).
    if isinstance(value, str):
        parts = urlsplit(value.strip())
        if parts.scheme in ("http", "https") and parts.hostname:
            return value.strip()
    raise _Invalid("is not an http:// or https:// URL")


def _existing_file(value: Any) -> str:
    if isinstance(value, str) and value and Path(value).is_file():
        return value
    raise _Invalid("is not an existing file")


def _module(value: Any) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", text) or text.endswith(".py"):
        return text
    raise _Invalid("is not a module name (package.module) or a .py file")


def _key(value: Any) -> str:
    if isinstance(value, str) and value:
        return value  # never stripped: a key is a password, spaces included
    raise _Invalid("is not a non-empty key")


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
    except _Invalid:
        raise _Invalid("is not a queue NAME[,WEIGHT] (WEIGHT an integer ≥ 0)") from None


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
    except _Invalid:
        pass
    raise _Invalid(f"is not a sentinel HOST[:PORT] (PORT 1-65535, default {DEFAULT_SENTINEL_PORT})")


_STORE_FORMS: Final = "a payload store NAME=redis[:TTL_SECONDS] or NAME=file:DIRECTORY"


def _store(value: Any) -> PayloadStoreSpec:
    if isinstance(value, str):
        given_name, equals, rest = value.partition("=")
        kind, _, argument = rest.partition(":")
        if not equals:
            raise _Invalid(f"is not {_STORE_FORMS}")
        spec: dict[str, Any] = {"name": given_name, "adapter": kind.strip()}
        if argument:
            spec["directory" if kind.strip() == "file" else "ttl"] = argument
        value = spec
    if isinstance(value, PayloadStoreSpec):
        value = dataclasses.asdict(value)
    if not isinstance(value, Mapping):
        raise _Invalid(f"is not {_STORE_FORMS}")
    unknown = set(value) - {"name", "adapter", "directory", "ttl"}
    if unknown:
        raise _Invalid(f"has unknown keys {', '.join(sorted(map(str, unknown)))}")
    try:
        name = _name(value.get("name"))
    except _Invalid:
        raise _Invalid(f"is not {_STORE_FORMS} (the name is empty)") from None
    adapter, directory, ttl = value.get("adapter"), value.get("directory"), value.get("ttl")
    if adapter == "file":
        if ttl is not None:
            raise _Invalid("is a file store, which has no ttl")
        if not isinstance(directory, str) or not directory:
            raise _Invalid("is a file store without a directory (NAME=file:DIRECTORY)")
        return PayloadStoreSpec(name, "file", directory)
    if adapter == "redis":
        if directory is not None:
            raise _Invalid("is a redis store, which has no directory")
        try:
            seconds = _optional(_seconds)(ttl)
        except _Invalid:
            raise _Invalid("has a ttl that is not a number of seconds > 0") from None
        if seconds is not None and seconds < 0.0005:  # Redis refuses PX 0
            raise _Invalid("has a ttl under 0.0005 s (Redis expiries are whole milliseconds)")
        return PayloadStoreSpec(name, "redis", ttl=seconds)
    raise _Invalid(f"is not {_STORE_FORMS} (adapter must be redis or file)")


def _processes(value: Any) -> int:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return os.cpu_count() or 1
    try:
        return _integer(1)(value)
    except _Invalid:
        raise _Invalid('is not an integer ≥ 1 or "auto"') from None


def _sidekiq_version(value: Any) -> str:
    text = str(value).strip() if isinstance(value, str | int | float) else ""
    major = text.split(".")[0]
    if not isinstance(value, bool) and major in ("6", "7", "8") and re.fullmatch(r"[\d.]+", text):
        return major
    raise _Invalid('is not a Sidekiq version 6, 7 or 8 (like "7" or "7.3")')


_SECONDS: Final = "a number of seconds > 0"


def _options() -> tuple[_Option, ...]:
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
    ) -> _Option:
        default = _DEFAULTS[name]
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
        return _Option(info, parse, separator, strip, secret)

    numbers = "SECONDS"
    return (
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
        option("payload_stores", _store, "NAME=redis[:TTL] or NAME=file:DIRECTORY items",
               "external payload stores (repeatable; the last is the default)",
               flags=("--payload-store",), metavar="SPEC", separator=",",
               toml='payload_stores.big = { adapter = "redis", ttl = 86400 }'),
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
        option("processes", _processes, 'an integer ≥ 1 or "auto" (CPU count)',
               "worker processes to run", metavar="N|auto"),
        option("log_format", _choice("plain", "json"), "plain or json",
               "log line format", metavar="plain|json"),
        option("log_level", _choice("debug", "info", "warning", "error",
                                    aliases={"warn": "warning"}),
               "debug, info, warning or error", "least severe level logged",
               metavar="LEVEL"),
    )  # fmt: skip


def _toml_literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[]"
    return json.dumps(value, ensure_ascii=False)


_DEFAULTS: Final = {f.name: f.default for f in dataclasses.fields(Config)}
_OPTIONS: Final = {option.info.name: option for option in _options()}
FIELDS: Final[Mapping[str, OptionInfo]] = MappingProxyType(
    {name: option.info for name, option in _OPTIONS.items()}
)
"""Every option's metadata, in :class:`Config` field order."""


# --- checking ---


def _show(option: _Option, value: object) -> str:
    if option.secret:
        return "(a key)" if value else '""'
    if isinstance(value, str):
        return json.dumps(hide_password(value) if "://" in value else value, ensure_ascii=False)
    if isinstance(value, PayloadStoreSpec):
        return _describe_store(value)
    try:
        return json.dumps(value, ensure_ascii=False)
    except TypeError:
        return repr(value)


def _items(option: _Option, value: object) -> list[object]:
    """The items of a list option (one string is one item; the environment pre-splits)."""
    if option.info.name == "payload_stores" and isinstance(value, Mapping):
        # TOML's [payload_stores.NAME] tables, in file order (the last is the default)
        return [
            {"name": name, **table} if isinstance(table, Mapping) else table
            for name, table in value.items()
        ]
    if isinstance(value, Sequence) and not isinstance(value, str):
        return list(value)
    return [value]


def _check(layers: Mapping[str, tuple[object, str]]) -> dict[str, Any]:
    """Parse and check every option's value; raise one error listing every problem."""
    problems: list[str] = []
    values: dict[str, Any] = {}
    for name, (value, source) in layers.items():
        option = _OPTIONS[name]
        if option.separator is None:
            try:
                values[name] = option.parse(value)
            except _Invalid as exc:
                problems.append(f"{name}: {_show(option, value)} from {source} {exc}")
            continue
        parsed = []
        for item in _items(option, value):
            try:
                parsed.append(option.parse(item))
            except _Invalid as exc:
                problems.append(f"{name}: {_show(option, item)} from {source} {exc}")
        if len(parsed) == len(_items(option, value)):
            values[name] = tuple(parsed)
    # Rules between options only run on options that parsed, so no problem is reported twice.
    problems += _cross_check(values, {name: source for name, (_, source) in layers.items()})
    if problems:
        raise ConfigurationError("\n".join(problems))
    return values


def _cross_check(values: Mapping[str, Any], sources: Mapping[str, str]) -> list[str]:
    def where(*names: str) -> str:
        return ", ".join(f"{name} from {sources[name]}" for name in names)

    needed: tuple[str, ...] = (
        "queues",
        "heartbeat_interval",
        "orphan_threshold",
        "redis_url",
        "redis_sentinels",
    )
    needed += ("redis_sentinel_master", "payload_stores", "default_payload_store")
    if not all(name in values for name in needed):
        return []  # an option these rules read is already reported as unreadable
    problems: list[str] = []
    if not values["queues"]:
        problems.append(f"queues: no queue given ({where('queues')}); at least one is required")
    if values["heartbeat_interval"] >= values["orphan_threshold"]:
        problems.append(
            f"heartbeat_interval: {values['heartbeat_interval']} must be less than "
            f"orphan_threshold {values['orphan_threshold']} "
            f"({where('heartbeat_interval', 'orphan_threshold')})"
        )
    if values["redis_sentinels"] and not values["redis_sentinel_master"]:
        problems.append(
            f"redis_sentinel_master: required with redis_sentinels ({where('redis_sentinels')})"
        )
    if values["redis_sentinel_master"] and not values["redis_sentinels"]:
        problems.append(
            "redis_sentinels: at least one is required with redis_sentinel_master "
            f"({where('redis_sentinel_master')})"
        )
    if values["redis_sentinels"] and urlsplit(values["redis_url"]).scheme == "unix":
        problems.append(
            f"redis_url: a unix:// URL cannot be used with sentinels ({where('redis_url')})"
        )
    names = [spec.name for spec in values["payload_stores"]]
    for duplicate in sorted({name for name in names if names.count(name) > 1}):
        problems.append(
            f"payload_stores: {duplicate!r} is configured twice ({where('payload_stores')})"
        )
    default = values["default_payload_store"]
    if default is not None and default not in names:
        problems.append(
            f"default_payload_store: {default!r} from {sources['default_payload_store']} is not "
            f"a configured payload store (configured: {', '.join(names) or 'none'})"
        )
    return problems


# --- sources ---


def load_config(
    *,
    flags: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> Config:
    """Build the configuration from defaults, a TOML file, the environment and flags.

    ``flags`` holds only what the user passed (keys are field names; a ``"config"`` key
    names the TOML file when ``config_file`` is not given). ``env`` defaults to
    ``os.environ``. Raises :class:`ConfigurationError` listing every problem, one per line.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    given_flags = dict(flags or {})
    flag_file = given_flags.pop("config", None)
    layers: dict[str, tuple[object, str]] = {
        name: (_DEFAULTS[name], "default") for name in _OPTIONS
    }
    problems: list[str] = []
    path = config_file or flag_file or environ.get(CONFIG_FILE_ENV) or None
    if path is not None:
        layers |= _file_layer(Path(str(path)), problems)
    layers |= _env_layer(environ, problems)
    for name, value in given_flags.items():
        if name in _OPTIONS:
            layers[name] = (value, "flag " + "/".join(_OPTIONS[name].info.flags))
        else:
            problems.append(f"{name}: unknown option (from the command line)")
    try:
        values = _check(layers)
    except ConfigurationError as exc:
        problems += str(exc).splitlines()
    if problems:
        raise ConfigurationError("\n".join(problems))
    return Config(**values)


def _file_layer(path: Path, problems: list[str]) -> dict[str, tuple[object, str]]:
    source = f"config file {path}"
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        problems.append(f"config: cannot read {source}: {exc.strerror or exc}")
        return {}
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"config: {source} is not valid TOML: {exc}")
        return {}
    layer: dict[str, tuple[object, str]] = {}
    for key, value in data.items():
        if key in _OPTIONS:
            layer[key] = (value, source)
        else:
            problems.append(f"{key}: unknown key in {source}{_suggest(key, list(_OPTIONS))}")
    return layer


def _env_layer(environ: Mapping[str, str], problems: list[str]) -> dict[str, tuple[object, str]]:
    layer: dict[str, tuple[object, str]] = {}
    # Sidekiq's conventions first, so PATIENT_HTTP_REDIS_URL below overrides them.
    provider = environ.get("REDIS_PROVIDER")
    if provider and ":" in provider:
        problems.append(
            f"redis_url: REDIS_PROVIDER must name the variable holding the Redis URL "
            f"(like REDISTOGO_URL), not be a URL: {_show(_OPTIONS['redis_url'], provider)}"
        )
    elif provider and environ.get(provider):
        layer["redis_url"] = (environ[provider], provider)
    elif environ.get("REDIS_URL"):
        layer["redis_url"] = (environ["REDIS_URL"], "REDIS_URL")
    known = {CONFIG_FILE_ENV}
    for name, option in _OPTIONS.items():
        variable = option.info.env[0]
        known.add(variable)
        text = environ.get(variable)
        if not text:
            continue
        if option.separator is None:
            layer[name] = (text, variable)
        else:
            items = text.split(option.separator)
            layer[name] = ([item.strip() if option.strip else item for item in items], variable)
    for variable in sorted(environ):
        if variable.startswith(ENV_PREFIX) and variable not in known:
            hint = _suggest(variable, sorted(known))
            if hint:
                problems.append(f"{variable}: unknown environment variable{hint}")
            else:
                log.warning("ignoring unknown environment variable %s", variable)
    return layer


def _suggest(word: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(word.replace("-", "_"), candidates, n=1, cutoff=0.8)
    return f" (did you mean {close[0]}?)" if close else ""


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


def options_table_markdown() -> str:
    """Return the README's options table (option, flag, env, TOML, default, meaning)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [
        "| option | flag | env | TOML | default | meaning |",
        "|---|---|---|---|---|---|",
        "| config file | `--config FILE` | `PATIENT_HTTP_CONFIG` | — | — | TOML file to read |",
    ]
    for info in FIELDS.values():
        env = ", ".join(f"`{name}`" for name in info.env)
        if info.name == "redis_url":
            env += " (or the variable `REDIS_PROVIDER` names)"
        meaning = info.help
        if info.repeatable:
            separator = _OPTIONS[info.name].separator
            meaning += f"; env items separated by `{separator}`"
        lines.append(
            f"| `{info.name}` | `{cell(info.flag)}` | {env} | `{cell(info.toml)}` | "
            f"{cell(_default_text(info))} | {cell(meaning)} ({cell(info.kind)}) |"
        )
    return "\n".join(lines) + "\n"
