"""Where a configuration comes from: defaults < a TOML file < the environment < flags.

Role: :func:`load_config`, which reads each source into a layer of values (each with where it
came from) and hands them to the checks of :mod:`patient_sidekiq.config.model`, so every
problem of every source is reported at once, one line each.

When nothing names a Redis and a command runs inside the repository this package was installed
from (editable, as ``scripts/setup`` does), the URL of the redis-server ``scripts/run`` embeds
is the default: ``scripts/run`` writes it to ``.run/redis/url`` (``PATIENT_SIDEKIQ_RUN_DIR``
moves ``.run``) while that server runs, with its pid in ``.run/redis/pid``. A file whose
server is gone is a configuration error, never a silent fallback to another Redis.

Keys: none.
"""

from __future__ import annotations

import difflib
import logging
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from patient_sidekiq.config.model import (
    CONFIG_FILE_ENV,
    DEFAULTS,
    OPTIONS,
    Config,
    check_layers,
    show_value,
)
from patient_sidekiq.config.options import ENV_PREFIX
from patient_sidekiq.errors import ConfigurationError

__all__ = ["load_config"]

log = logging.getLogger(__name__)


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
    layers: dict[str, tuple[object, str]] = {name: (DEFAULTS[name], "default") for name in OPTIONS}
    problems: list[str] = []
    path = config_file or flag_file or environ.get(CONFIG_FILE_ENV) or None
    if path is not None:
        layers |= _file_layer(Path(str(path)), problems)
    layers |= _env_layer(environ, problems)
    for name, value in given_flags.items():
        if name in OPTIONS:
            layers[name] = (value, "flag " + "/".join(OPTIONS[name].info.flags))
        else:
            problems.append(f"{name}: unknown option (from the command line)")
    # Only for the process's own environment: callers passing ``env`` (tests, embedding code)
    # get exactly the sources they gave, whatever a scripts/run beside them is doing.
    sentinels = layers["redis_sentinels"][1] != "default"
    if env is None and layers["redis_url"][1] == "default" and not sentinels:
        layers |= _scripts_run_layer(environ, Path.cwd(), problems)
    try:
        values = check_layers(layers)
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
        if key in OPTIONS:
            layer[key] = (value, source)
        else:
            problems.append(f"{key}: unknown key in {source}{_suggest(key, list(OPTIONS))}")
    return layer


def _env_layer(environ: Mapping[str, str], problems: list[str]) -> dict[str, tuple[object, str]]:
    layer: dict[str, tuple[object, str]] = {}
    # Sidekiq's conventions first, so PATIENT_HTTP_REDIS_URL below overrides them.
    provider = environ.get("REDIS_PROVIDER")
    if provider and ":" in provider:
        problems.append(
            f"redis_url: REDIS_PROVIDER must name the variable holding the Redis URL "
            f"(like REDISTOGO_URL), not be a URL: {show_value(OPTIONS['redis_url'], provider)}"
        )
    elif provider and environ.get(provider):
        layer["redis_url"] = (environ[provider], provider)
    elif environ.get("REDIS_URL"):
        layer["redis_url"] = (environ["REDIS_URL"], "REDIS_URL")
    known = {CONFIG_FILE_ENV}
    for name, option in OPTIONS.items():
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


REPOSITORY: Final = Path(__file__).resolve().parents[3]
"""The checkout this module runs from, when it is one (``scripts/run`` beside ``src/``)."""


def _scripts_run_layer(
    environ: Mapping[str, str], cwd: Path, problems: list[str]
) -> dict[str, tuple[object, str]]:
    """The embedded Redis of ``scripts/run`` when ``cwd`` is inside this repository."""
    if not (REPOSITORY / "scripts" / "run").is_file() or not (REPOSITORY / "src").is_dir():
        return {}
    try:
        if not cwd.resolve().is_relative_to(REPOSITORY):
            return {}
    except OSError:  # a working directory removed under us is no repository
        return {}
    state = REPOSITORY / environ.get("PATIENT_SIDEKIQ_RUN_DIR", ".run") / "redis"
    url_file = state / "url"
    try:
        url = url_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        problems.append(f"redis_url: cannot read {url_file}: {exc.strerror or exc}")
        return {}
    try:
        pid = int((state / "pid").read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        pid = None
    if not url or pid is None or not _is_redis_server(pid):
        what = "its redis-server" if pid is None else f"its redis-server (pid {pid})"
        problems.append(
            f"redis_url: {url_file} names the Redis scripts/run started ({url or 'empty'}), "
            f"but {what} no longer runs: start scripts/run again, set REDIS_URL or "
            f"--redis-url, or delete {url_file}"
        )
        return {}
    return {"redis_url": (url, f"scripts/run's redis-server ({url_file})")}


def _is_redis_server(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    # A recycled pid is some other program: Linux names the process in /proc.
    comm = Path(f"/proc/{pid}/comm")
    try:
        return comm.read_text(encoding="utf-8").startswith("redis-server")
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return True


def _suggest(word: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(word.replace("-", "_"), candidates, n=1, cutoff=0.8)
    return f" (did you mean {close[0]}?)" if close else ""
