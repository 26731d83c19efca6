"""Configuration: one frozen :class:`Config`, built once from every source, passed in.

Role: the :class:`Config` value, its builders, the option table built from its defaults, and
the checks every source's values go through, alone and between options.
:mod:`patient_sidekiq.config.loader` reads the sources below; what each option accepts, its
flags and variables, and the README table live in :mod:`patient_sidekiq.config.options`.

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
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from patient_sidekiq.config.options import DEFAULT_SENTINEL_PORT as DEFAULT_SENTINEL_PORT
from patient_sidekiq.config.options import ENV_PREFIX as ENV_PREFIX
from patient_sidekiq.config.options import (
    InvalidValue,
    Option,
    describe_store,
    option_table,
    options_markdown,
)
from patient_sidekiq.config.options import OptionInfo as OptionInfo
from patient_sidekiq.config.options import PayloadStoreSpec as PayloadStoreSpec
from patient_sidekiq.config.options import PreprocessorSpec as PreprocessorSpec
from patient_sidekiq.config.options import SecretSpec as SecretSpec
from patient_sidekiq.errors import ConfigurationError
from patient_sidekiq.http.settings import HttpSettings, Preprocessor, SecretValue
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.redis_io.redis_target import RedisTarget, hide_password
from patient_sidekiq.registry.encryption_hooks import CustomEncryptor, EncryptionHooks
from patient_sidekiq.sidekiq.job import TimestampDialect
from patient_sidekiq.sidekiq.launcher import WorkerSettings
from patient_sidekiq.wire.encryption import Encryptor, MessageEncryptor
from patient_sidekiq.wire.packing import PayloadSettings
from patient_sidekiq.wire.payload_store import PayloadStore
from patient_sidekiq.wire.stores import open_store

__all__ = [
    "DEFAULTS",
    "FIELDS",
    "OPTIONS",
    "Config",
    "OptionInfo",
    "PayloadStoreSpec",
    "PreprocessorSpec",
    "SecretSpec",
    "check_layers",
    "options_table_markdown",
    "show_value",
]

log = logging.getLogger(__name__)

CONFIG_FILE_ENV: Final = "PATIENT_HTTP_CONFIG"


# The HTTP defaults are the processor's own, so the two can never drift apart.
_HTTP: Final = HttpSettings()


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
    max_connections: int = _HTTP.max_connections
    request_timeout: float = _HTTP.request_timeout
    connection_timeout: float | None = _HTTP.connection_timeout
    shutdown_timeout: float = 25.0
    max_response_size: int = _HTTP.max_response_size
    max_redirects: int = _HTTP.max_redirects
    retries: int = _HTTP.retries
    proxy_url: str | None = _HTTP.proxy_url
    user_agent: str = _HTTP.user_agent
    raise_error_responses: bool = _HTTP.raise_error_responses
    protocol: Literal["auto", "http1", "http2"] = _HTTP.protocol
    verify_ssl: bool = _HTTP.verify
    ca_bundle: str | None = _HTTP.ca_bundle
    heartbeat_interval: float = 60.0
    orphan_threshold: float = 300.0
    payload_store_threshold: int = 65_536
    encryption_key: tuple[str, ...] = ()
    payload_stores: tuple[PayloadStoreSpec, ...] = ()
    secrets: tuple[SecretSpec, ...] = ()
    preprocessors: tuple[PreprocessorSpec, ...] = ()
    default_payload_store: str | None = None
    callback_concurrency: int = 10
    max_retries: int = 25
    backtrace: bool | int = True
    sidekiq_version: Literal["6", "7", "8"] = "7"
    tag: str = ""
    processes: int = 1
    log_format: Literal["plain", "json"] = "plain"
    log_level: str = "info"
    log_requests: Literal["info", "debug", "off"] = "info"
    metrics_port: int | None = None
    # Every interface, as prometheus_client's own server: a container's port must be reachable.
    metrics_host: str = "0.0.0.0"

    def __post_init__(self) -> None:
        # Direct construction and replace() get the same checks (and normalisation: a queue
        # given as "name,2" becomes ("name", 2)) as load_config.
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        checked = check_layers({name: (value, "Config") for name, value in values.items()})
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        # Never a key or a password, not even in a traceback.
        shown = []
        for name in FIELDS:
            value = getattr(self, name)
            if name == "encryption_key":
                shown.append(f"{name}=<{len(value)} keys>")
            elif name == "secrets":
                shown.append(f"{name}={[spec.describe() for spec in value]!r}")
            elif name in ("redis_url", "proxy_url") and value:
                shown.append(f"{name}={hide_password(value)!r}")
            else:
                shown.append(f"{name}={value!r}")
        return f"Config({', '.join(shown)})"

    def replace(self, **changes: Any) -> Config:
        """Return a copy with ``changes`` applied and checked like every other source."""
        layer = {name: (value, "replace()") for name, value in changes.items()}
        problems = [
            f"{name}: unknown option (from replace())" for name in layer if name not in OPTIONS
        ]
        if problems:
            raise ConfigurationError("\n".join(problems))
        current = {f.name: (getattr(self, f.name), "Config") for f in dataclasses.fields(self)}
        return Config(**check_layers(current | layer))

    # --- builders: they create settings objects and never open a connection ---

    def redis_target(self) -> RedisTarget:
        """Where Redis is (Sentinel-managed when sentinels are configured)."""
        return RedisTarget(self.redis_url, self.redis_sentinels, self.redis_sentinel_master)

    def http_settings(
        self,
        secrets: Mapping[str, SecretValue] | None = None,
        preprocessors: Mapping[str, Preprocessor] | None = None,
    ) -> HttpSettings:
        """How requests are executed; ``secrets`` and ``preprocessors`` are what
        :func:`~patient_sidekiq.registry.registrations.build_secrets` / ``build_preprocessors`` made
        of the code registrations and this configuration."""
        return HttpSettings(
            secrets=secrets or {},
            preprocessors=preprocessors or {},
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
            # Sidekiq 7's Metrics tab; 6 has none, 8 was not checked against a real 8.
            execution_metrics=self.sidekiq_version == "7",
        )
        return settings if identity is None else dataclasses.replace(settings, identity=identity)

    def encryptor(self, hooks: EncryptionHooks | None = None) -> Encryptor | None:
        """The payload encryptor (first key encrypts, every key decrypts), or None; with
        registered ``hooks``, they take the directions they cover."""
        keyed = MessageEncryptor(self.encryption_key) if self.encryption_key else None
        if hooks is not None and hooks.configured:
            return CustomEncryptor(hooks, keyed)
        return keyed

    @property
    def default_store_name(self) -> str | None:
        """The store new large payloads go to: the one named, else the last configured."""
        if self.default_payload_store is not None:
            return self.default_payload_store
        return self.payload_stores[-1].name if self.payload_stores else None

    def store_urls(self) -> list[str]:
        """The Redis URLs of stores with a connection of their own (the gem's ``redis:``)."""
        return sorted(
            {spec.url for spec in self.payload_stores if spec.adapter == "redis" and spec.url}
        )

    def payload_settings(
        self,
        bridge: RedisBridge,
        own: Mapping[str, RedisBridge] | None = None,
        hooks: EncryptionHooks | None = None,
    ) -> PayloadSettings:
        """Encryption and external storage; ``redis`` stores write through ``bridge``, or
        through ``own[url]`` for a store with a Redis of its own (see :meth:`store_urls`).

        ``hooks`` (registered encryption callables) replace ``encryption_key`` in the
        direction they cover. S3 and SQL stores open their connections at first use.
        """
        stores: dict[str, PayloadStore] = {}
        for spec in self.payload_stores:
            stores[spec.name] = open_store(spec, (own or {}).get(spec.url or "", bridge))
        return PayloadSettings(
            encryptor=self.encryptor(hooks),
            stores=stores,
            default_store=self.default_store_name,
            store_threshold=self.payload_store_threshold,
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
                described[info.name] = [describe_store(spec) for spec in value]
            elif info.name in ("secrets", "preprocessors"):
                described[info.name] = [spec.describe() for spec in value]
            elif info.name == "default_payload_store":
                described[info.name] = self.default_store_name
            else:
                described[info.name] = value
        return described


# --- the option table, built from Config's defaults ---

DEFAULTS: Final = {f.name: f.default for f in dataclasses.fields(Config)}
OPTIONS: Final = option_table(DEFAULTS)
FIELDS: Final[Mapping[str, OptionInfo]] = MappingProxyType(
    {name: option.info for name, option in OPTIONS.items()}
)
"""Every option's metadata, in :class:`Config` field order."""


def options_table_markdown() -> str:
    """Return the README's options table (option, flag, env, TOML, default, meaning)."""
    return options_markdown(OPTIONS)


# --- checking ---


_PASSWORD_IN_URL: Final = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def show_value(option: Option, value: object) -> str:
    if option.secret:
        return "(a key)" if value else '""'
    if option.info.name == "secrets":
        # an unreadable secret entry may hold a literal value: name where it is, not what
        name = value.get("name") if isinstance(value, Mapping) else str(value).partition("=")[0]
        return f"(the secret {name!r})"
    if isinstance(value, str):
        # a URL's password, whether the value is the URL or holds one (a store spec)
        is_url = re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", value) is not None
        shown = hide_password(value) if is_url else _PASSWORD_IN_URL.sub(r"\1***@", value)
        return json.dumps(shown, ensure_ascii=False)
    if isinstance(value, PayloadStoreSpec):
        return describe_store(value)
    try:
        return json.dumps(value, ensure_ascii=False)
    except TypeError:
        return repr(value)


_NAMED_TABLES: Final = ("payload_stores", "secrets", "preprocessors")


def _items(option: Option, value: object) -> list[object]:
    """The items of a list option (one string is one item; the environment pre-splits)."""
    if option.info.name in _NAMED_TABLES and isinstance(value, Mapping):
        # TOML's [payload_stores.NAME] (and secrets, preprocessors) tables, in file order
        # (the last store is the default); `openai = "env:X"` is the short form.
        return [
            {"name": name, **table}
            if isinstance(table, Mapping)
            else f"{name}={table}"
            if isinstance(table, str)
            else table
            for name, table in value.items()
        ]
    if isinstance(value, Sequence) and not isinstance(value, str):
        return list(value)
    return [value]


def check_layers(layers: Mapping[str, tuple[object, str]]) -> dict[str, Any]:
    """Parse and check every option's value; raise one error listing every problem."""
    problems: list[str] = []
    values: dict[str, Any] = {}
    for name, (value, source) in layers.items():
        option = OPTIONS[name]
        if option.separator is None:
            try:
                values[name] = option.parse(value)
            except InvalidValue as exc:
                problems.append(f"{name}: {show_value(option, value)} from {source} {exc}")
            continue
        parsed = []
        for item in _items(option, value):
            try:
                parsed.append(option.parse(item))
            except InvalidValue as exc:
                problems.append(f"{name}: {show_value(option, item)} from {source} {exc}")
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
    needed += ("secrets", "preprocessors")
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
    for option in ("secrets", "preprocessors"):
        given = [spec.name for spec in values[option]]
        for duplicate in sorted({name for name in given if given.count(name) > 1}):
            problems.append(f"{option}: {duplicate!r} is configured twice ({where(option)})")
    default = values["default_payload_store"]
    if default is not None and default not in names:
        problems.append(
            f"default_payload_store: {default!r} from {sources['default_payload_store']} is not "
            f"a configured payload store (configured: {', '.join(names) or 'none'})"
        )
    return problems
