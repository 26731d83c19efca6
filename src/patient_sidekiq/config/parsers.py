"""One parser per configuration option value.

A parser takes a value as any source gives it (TOML value, environment string, flag string)
and returns it typed and normalised, or raises :class:`InvalidValue` saying what it is not
("is not …"); :mod:`patient_sidekiq.config.options` ties each option to its parser.

Keys: none.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from patient_sidekiq.redis_io.redis_target import REDIS_SCHEMES, hide_password
from patient_sidekiq.registry.registrations import PreprocessorSpec, SecretSpec
from patient_sidekiq.wire.payload_store import PayloadStoreSpec
from patient_sidekiq.wire.sql_store import DEFAULT_TABLE

__all__ = [
    "DEFAULT_SENTINEL_PORT",
    "SQL_SCHEMES",
    "InvalidValue",
    "PayloadStoreSpec",
    "PreprocessorSpec",
    "SecretSpec",
    "available_cpus",
    "describe_store",
]

DEFAULT_SENTINEL_PORT: Final = 26379


class InvalidValue(Exception):
    """One value is not acceptable; the message says what it is not (``"is not …"``)."""


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


def integer(minimum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
            return value
        raise InvalidValue(f"is not an integer ≥ {minimum}")

    return parse


def port(value: Any) -> int:
    try:
        number = integer(1)(value)
    except InvalidValue:
        number = 0
    if 1 <= number <= 65_535:
        return number
    raise InvalidValue("is not a TCP port (1 to 65535)")


def seconds(value: Any) -> float:
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


def optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse_optional(value: Any) -> Any:
        return None if value is None or value == "" else parse(value)

    return parse_optional


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    words = {"true": True, "1": True, "yes": True, "on": True}
    words |= {"false": False, "0": False, "no": False, "off": False}
    if isinstance(value, str) and value.strip().lower() in words:
        return words[value.strip().lower()]
    raise InvalidValue("is not a boolean (true/false, yes/no, 1/0)")


def choice(*choices: str, aliases: Mapping[str, str] | None = None) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = value.strip().lower() if isinstance(value, str) else None
        text = (aliases or {}).get(text or "", text)
        if text in choices:
            return text
        raise InvalidValue(f"is not one of {', '.join(choices)}")

    return parse


def text(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise InvalidValue("is not a string")


def identifier(value: Any) -> str:
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise InvalidValue("is not a non-empty name")


def redis_url(value: Any) -> str:
    if isinstance(value, str) and urlsplit(value.strip()).scheme in REDIS_SCHEMES:
        return value.strip()
    raise InvalidValue("is not a redis://, rediss:// or unix:// URL")


def http_url(value: Any) -> str:
    # The gem's rule: an HTTP or HTTPS URL (with a host).
    if isinstance(value, str):
        parts = urlsplit(value.strip())
        if parts.scheme in ("http", "https") and parts.hostname:
            return value.strip()
    raise InvalidValue("is not an http:// or https:// URL")


def existing_file(value: Any) -> str:
    if isinstance(value, str) and value and Path(value).is_file():
        return value
    raise InvalidValue("is not an existing file")


def module(value: Any) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", text) or text.endswith(".py"):
        return text
    raise InvalidValue("is not a module name (package.module) or a .py file")


def key(value: Any) -> str:
    if isinstance(value, str) and value:
        return value  # never stripped: a key is a password, spaces included
    raise InvalidValue("is not a non-empty key")


def queue(value: Any) -> tuple[str, int]:
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
        return (identifier(name), integer(0)(weight))
    except InvalidValue:
        raise InvalidValue("is not a queue NAME[,WEIGHT] (WEIGHT an integer ≥ 0)") from None


def sentinel(value: Any) -> tuple[str, int]:
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
        number = integer(1)(port)
        if number <= 65535:
            return (identifier(host), number)
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
        return spec  # refused by payload_store, which names the adapters
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


def payload_store(value: Any) -> PayloadStoreSpec:
    if isinstance(value, str):
        value = _store_from_text(value)
    if isinstance(value, PayloadStoreSpec):
        value = {k: v for k, v in dataclasses.asdict(value).items() if v is not None}
    if not isinstance(value, Mapping):
        raise InvalidValue(f"is not {_STORE_FORMS}")
    try:
        name = identifier(value.get("name"))
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
                endpoint = http_url(endpoint)
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
        ttl_seconds = optional(seconds)(ttl)
    except InvalidValue:
        raise InvalidValue("has a ttl that is not a number of seconds > 0") from None
    if ttl_seconds is not None and ttl_seconds < 0.0005:  # Redis refuses PX 0
        raise InvalidValue("has a ttl under 0.0005 s (Redis expiries are whole milliseconds)")
    if url is not None:
        try:
            url = redis_url(url)
        except InvalidValue:
            raise InvalidValue(
                "has a url that is not a redis://, rediss:// or unix:// URL"
            ) from None
    return PayloadStoreSpec(name, "redis", ttl=ttl_seconds, key_prefix=key_prefix, url=url)


_SECRET_FORMS: Final = (
    'a secret NAME=env:VARIABLE or NAME=file:PATH (TOML also NAME = { value = "…" })'
)


_SECRET_SOURCES: Final[tuple[Literal["env", "file", "value"], ...]] = ("env", "file", "value")


def secret(value: Any) -> SecretSpec:
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


def preprocessor(value: Any) -> PreprocessorSpec:
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


def processes(value: Any) -> int:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return available_cpus()
    try:
        return integer(1)(value)
    except InvalidValue:
        raise InvalidValue('is not an integer ≥ 1 or "auto"') from None


def backtrace(value: Any) -> bool | int:
    """Sidekiq's ``backtrace`` job option: true (every line), false, or a number of lines."""
    if isinstance(value, int) and not isinstance(value, bool):
        number: object = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value)
    else:
        try:
            return boolean(value)
        except InvalidValue:
            number = None
    if isinstance(number, int) and number >= 0:
        return number if number else False
    raise InvalidValue("is not true, false or a number of lines ≥ 0")


def sidekiq_version(value: Any) -> str:
    text = str(value).strip() if isinstance(value, str | int | float) else ""
    major = text.split(".")[0]
    if not isinstance(value, bool) and major in ("6", "7", "8") and re.fullmatch(r"[\d.]+", text):
        return major
    raise InvalidValue('is not a Sidekiq version 6, 7 or 8 (like "7" or "7.3")')
