"""The ``patient-sidekiq`` command line (a typer app): run, enqueue, status, inflight, demo.

``run`` takes every :class:`~patient_sidekiq.config.model.Config` option as a flag; its flags are
generated from :data:`~patient_sidekiq.config.model.FIELDS` (``--kebab-case`` of the field name,
with the fixed Sidekiq-style spellings ``-q``, ``-r``, ``-c``, ``-t``, ``-g`` …), so a new
option can never be missing from the command line. Flag values are
passed to :func:`~patient_sidekiq.config.model.load_config` as given: it parses and validates every
source the same way. A configuration problem prints one line per problem and exits 78
(``EX_CONFIG``), which the supervisor knows not to restart; Redis not answering at start
exits 69 (``EX_UNAVAILABLE``), as Sidekiq refuses to start without Redis.
"""

from __future__ import annotations

import inspect
import json
import socket
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Final

import trio
import typer

from patient_sidekiq._version import __version__
from patient_sidekiq.config.loader import load_config
from patient_sidekiq.config.model import CONFIG_FILE_ENV, FIELDS, Config, OptionInfo
from patient_sidekiq.errors import ConfigurationError, PatientSidekiqError, RedisUnavailableError
from patient_sidekiq.worker.supervisor import EX_CONFIG, EX_UNAVAILABLE, child_index

app = typer.Typer(
    # Click's plain help: 40 options with their variables never truncated, greppable.
    rich_markup_mode=None,
    name="patient-sidekiq",
    help="A Python worker for patient_http-sidekiq jobs, speaking Sidekiq's protocol.",
    no_args_is_help=True,
    add_completion=False,
)


_REDIS_HELP: Final = "Redis to use. env PATIENT_HTTP_REDIS_URL, REDIS_URL; default from --config"
_CONFIG_HELP: Final = f"A TOML file of options (redis_url …). env {CONFIG_FILE_ENV}"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"patient-sidekiq {__version__}")
        raise typer.Exit


@app.callback()
def _main(
    version: bool = typer.Option(
        False,
        "--version",
        help="Show the version and exit.",
        callback=_print_version,
        is_eager=True,
    ),
) -> None:
    """A Python worker for patient_http-sidekiq jobs, speaking Sidekiq's protocol."""


@app.command()
def version() -> None:
    """Show the version."""
    typer.echo(f"patient-sidekiq {__version__}")


def _config_failure(exc: ConfigurationError) -> typer.Exit:
    """Print one line per problem; the exit status (78) tells the supervisor not to restart."""
    for line in str(exc).splitlines():
        typer.echo(f"patient-sidekiq: {line}", err=True)
    return typer.Exit(EX_CONFIG)


def _config_or_exit(flags: dict[str, Any], config_file: str | None) -> Config:
    try:
        return load_config(flags=flags, config_file=config_file)
    except ConfigurationError as exc:
        raise _config_failure(exc) from None


def _passed(values: dict[str, Any]) -> dict[str, Any]:
    """Keep only the options the user gave (typer reports the others as None or [])."""
    return {name: value for name, value in values.items() if value not in (None, [], ())}


# --- run ---


def _option_help(info: OptionInfo) -> str:
    """Meaning, accepted values, variables and default."""
    return f"{info.help} ({info.kind}). env {', '.join(info.env)}; default {info.default_text}"


def _run_parameters() -> list[inspect.Parameter]:
    parameters = []
    for info in FIELDS.values():
        # None = not given: a flag's absence leaves the option to the file and the environment.
        option: Any = typer.Option(
            None,
            *info.flags,
            help=_option_help(info),
            metavar=info.metavar or None,
            show_default=False,
        )
        annotation: Any = list[str] | None if info.repeatable else str | None
        if info.switch:
            annotation = bool | None
        parameters.append(
            inspect.Parameter(
                info.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation
            )
        )
    verbose = typer.Option(
        False,
        "-v",
        "--verbose",
        help="Log at debug level: --log-level debug, and it wins over a --log-level flag.",
    )
    config_file = typer.Option(
        None,
        "--config",
        help=f"A TOML file of options. env {CONFIG_FILE_ENV}",
        metavar="FILE",
    )
    parameters += [
        inspect.Parameter(
            "verbose", inspect.Parameter.KEYWORD_ONLY, default=verbose, annotation=bool
        ),
        inspect.Parameter(
            "config_file",
            inspect.Parameter.KEYWORD_ONLY,
            default=config_file,
            annotation=str | None,
        ),
    ]
    return parameters


def _with_signature(
    function: Callable[..., Any], parameters: list[inspect.Parameter]
) -> Callable[..., Any]:
    function.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    function.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": None}
    return function


def _run(**values: Any) -> None:
    """Start the worker: the HTTP processor, and a callback worker when Python callbacks exist.

    Options come from (rising priority) defaults, --config FILE, PATIENT_HTTP_* / REDIS_URL
    environment variables, then these flags; a boolean flag's --no- form turns it off.
    SIGTERM/SIGINT stop gracefully, SIGTSTP quiets, SIGTTIN dumps the running jobs.

    Exit status: 0 after a graceful stop, 78 on a configuration error (one line per
    problem), 69 when Redis does not answer at start.
    """
    config_file = values.pop("config_file")
    if values.pop("verbose"):
        values["log_level"] = "debug"
    config = _config_or_exit(_passed(values), config_file)
    from patient_sidekiq.cli.logging_setup import configure_logging

    configure_logging(config.log_format, config.log_level)
    if config.processes > 1 and child_index() is None:
        raise typer.Exit(_supervise(config))
    from patient_sidekiq.worker.runner import Runner, load_requires, settle_gc

    try:
        load_requires(config.require)
        runner = Runner(config)
        runner.http_settings()  # secrets and preprocessors: refused before Redis is touched
    except ConfigurationError as exc:
        raise _config_failure(exc) from None
    settle_gc()  # after the app's modules are loaded: they are start-up too
    try:
        trio.run(runner.run)
    except RedisUnavailableError as exc:
        # Only the start-up check gets here; the supervisor restarts a child after it.
        typer.echo(f"patient-sidekiq: {exc}", err=True)
        raise typer.Exit(EX_UNAVAILABLE) from None


def _supervise(config: Config) -> int:
    from patient_sidekiq.worker.supervisor import SupervisorSettings, run_supervisor

    # Children run this same command line; the index variable makes them workers.
    child_argv = [sys.executable, "-m", "patient_sidekiq", *sys.argv[1:]]
    settings = SupervisorSettings(
        processes=config.processes,
        child_argv=child_argv,
        stop_timeout=config.shutdown_timeout + 10,
    )
    return run_supervisor(settings)


app.command(name="run")(_with_signature(_run, _run_parameters()))


# --- enqueue ---


def _key_value(item: str, what: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise typer.BadParameter(f"{what} must look like key=value, got {item!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw  # not a JSON literal: the text itself
    return key, value


@app.command()
def enqueue(
    # Described in the docstring: typer's argument rows would print a <str> placeholder.
    method: str = typer.Argument(..., hidden=True, metavar="METHOD"),
    url: str = typer.Argument(..., hidden=True, metavar="URL"),
    callback: str = typer.Option(
        ..., "--callback", help="Callback class name (Ruby or Python).", metavar="NAME"
    ),
    json_body: str | None = typer.Option(
        None, "--json", help="A JSON request body.", metavar="JSON"
    ),
    body: str | None = typer.Option(None, "--body", help="A raw request body.", metavar="TEXT"),
    header: list[str] | None = typer.Option(
        None, "--header", "-H", help="'Name: value', repeatable.", metavar="HEADER"
    ),
    callback_arg: list[str] | None = typer.Option(
        None,
        "--callback-arg",
        help="k=v for the callback (v is read as a JSON literal when it is one), repeatable.",
        metavar="K=V",
    ),
    timeout: float | None = typer.Option(
        None, "--timeout", help="Request timeout in seconds.", metavar="SECONDS"
    ),
    raise_error_responses: bool | None = typer.Option(
        None, "--raise-error-responses/--no-raise-error-responses"
    ),
    queue: str | None = typer.Option(
        None, "--queue", "-q", help="Queue (default: the first configured).", metavar="QUEUE"
    ),
    redis_url: str | None = typer.Option(None, "--redis-url", help=_REDIS_HELP, metavar="URL"),
    encryption_key: list[str] | None = typer.Option(None, "--encryption-key", metavar="KEY"),
    require: list[str] | None = typer.Option(None, "--require", "-r", metavar="MODULE"),
    config_file: str | None = typer.Option(None, "--config", help=_CONFIG_HELP, metavar="FILE"),
) -> None:
    """Enqueue one request as a real RequestWorker job (as the gem writes it); print its id.

    METHOD is get, post, put, patch or delete; URL the absolute URL to request. Exit status:
    0 enqueued, 1 when it cannot be (unknown callback, Redis), 2 on a bad argument, 78 on a
    configuration error.
    """
    config = _config_or_exit(
        _passed({"redis_url": redis_url, "encryption_key": encryption_key, "require": require}),
        config_file,
    )
    from patient_sidekiq.client.enqueue import Client
    from patient_sidekiq.worker.runner import load_requires

    headers: dict[str, str] = {}
    for item in header or []:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise typer.BadParameter(f"--header must look like 'Name: value', got {item!r}")
        headers[name.strip()] = value.strip()
    callback_args = dict(_key_value(item, "--callback-arg") for item in callback_arg or [])
    try:
        load_requires(config.require)
    except ConfigurationError as exc:
        raise _config_failure(exc) from None
    try:
        payload: Any = None if json_body is None else json.loads(json_body)
    except ValueError as exc:
        typer.echo(f"patient-sidekiq: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        client = Client.from_config(config, queue=queue)
        request_id = client.request(
            method,
            url,
            callback=callback,
            headers=headers or None,
            body=body,
            json=payload,
            timeout=timeout,
            callback_args=callback_args or None,
            raise_error_responses=raise_error_responses,
        )
    except PatientSidekiqError as exc:
        typer.echo(f"patient-sidekiq: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(request_id)


# --- status / inflight ---


async def _read_status(config: Config) -> Any:
    from patient_sidekiq.cli.status_collect import collect_status
    from patient_sidekiq.redis_io.redis_bridge import RedisBridge

    async with RedisBridge(config.redis_target(), name="patient-sidekiq-status") as bridge:
        return await collect_status(bridge)


@app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="Print JSON (for scripts)."),
    watch: float | None = typer.Option(
        None, "--watch", help="Refresh every SECONDS until interrupted.", metavar="SECONDS"
    ),
    check: bool = typer.Option(
        False,
        "--check",
        help="Print one line; exit 0 when a patient-sidekiq worker of this host is alive, "
        "1 when none is, 69 when Redis does not answer (for HEALTHCHECK and service managers).",
    ),
    redis_url: str | None = typer.Option(None, "--redis-url", help=_REDIS_HELP, metavar="URL"),
    config_file: str | None = typer.Option(None, "--config", help=_CONFIG_HELP, metavar="FILE"),
) -> None:
    """Every Sidekiq identity (Ruby and Python) with its role, queues, busy/concurrency and
    HTTP in-flight/capacity; HTTP totals, queue sizes, retry/scheduled/dead counts.

    A process is alive while its heartbeat is younger than 30 s. Exit status: 0 when a
    patient-sidekiq worker is alive, 1 when none is or Redis cannot be read, 78 on a
    configuration error; with --check, 69 when Redis does not answer.
    """
    config = _config_or_exit(_passed({"redis_url": redis_url}), config_file)
    if check:
        raise typer.Exit(_check(config))
    while True:
        try:
            report = trio.run(_read_status, config)
        except PatientSidekiqError as exc:
            typer.echo(f"patient-sidekiq: {exc}", err=True)
            raise typer.Exit(1) from None
        if as_json:
            typer.echo(json.dumps(report.to_json(), sort_keys=True))
        else:
            from patient_sidekiq.cli.status_render import console, status_table

            screen = console()
            if watch is not None and screen.is_terminal:
                screen.clear()
            screen.print(status_table(report))
        if watch is None:
            raise typer.Exit(0 if report.live_workers() else 1)
        time.sleep(watch)


def _check(config: Config) -> int:
    """``status --check``: one line, and the exit status a health check wants."""
    hostname = socket.gethostname()
    try:
        report = trio.run(_read_status, config)
    except RedisUnavailableError as exc:
        typer.echo(f"patient-sidekiq: {exc}", err=True)
        return EX_UNAVAILABLE
    except PatientSidekiqError as exc:
        typer.echo(f"patient-sidekiq: {exc}", err=True)
        return 1
    live = report.live_workers(hostname)
    if not live:
        typer.echo(f"not ok: no live patient-sidekiq worker on {hostname}")
        return 1
    names = ", ".join(f"{p.identity} ({p.role})" for p in live)
    typer.echo(f"ok: {len(live)} live patient-sidekiq process(es) on {hostname}: {names}")
    return 0


async def _read_inflight(config: Config, limit: int | None) -> Any:
    from patient_sidekiq.cli.inflight_collect import collect_inflight
    from patient_sidekiq.redis_io.redis_bridge import RedisBridge

    async with RedisBridge(config.redis_target(), name="patient-sidekiq-inflight") as bridge:
        return await collect_inflight(bridge, limit=limit)


@app.command()
def inflight(
    as_json: bool = typer.Option(False, "--json", help="Print JSON (for scripts)."),
    limit: int | None = typer.Option(None, "--limit", help="Show at most N entries.", metavar="N"),
    redis_url: str | None = typer.Option(None, "--redis-url", help=_REDIS_HELP, metavar="URL"),
    config_file: str | None = typer.Option(None, "--config", help=_CONFIG_HELP, metavar="FILE"),
) -> None:
    """The in-flight requests, oldest first: age, request id, method and URL (password and
    query values hidden), callback, and the owning process as the Busy page names it, alive
    or GONE (its requests wait for the orphan sweep). Exit status 1 when Redis cannot be read.
    """
    from patient_sidekiq.cli.status_render import console, inflight_table
    from patient_sidekiq.cli.status_report import inflight_to_json

    config = _config_or_exit(_passed({"redis_url": redis_url}), config_file)
    try:
        entries = trio.run(_read_inflight, config, limit)
    except PatientSidekiqError as exc:
        typer.echo(f"patient-sidekiq: {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(inflight_to_json(entries), sort_keys=True))
    else:
        console().print(inflight_table(entries))


# --- demo ---


@app.command()
def demo(
    requests: int = typer.Option(
        300, "--requests", "-n", min=1, help="How many requests to enqueue.", metavar="N"
    ),
    redis_url: str | None = typer.Option(None, "--redis-url", help=_REDIS_HELP, metavar="URL"),
    config_file: str | None = typer.Option(None, "--config", help=_CONFIG_HELP, metavar="FILE"),
) -> None:
    """Run a worker, a slow local API and a few hundred requests with a Python callback, live."""
    from patient_sidekiq.cli.demo import run_demo
    from patient_sidekiq.cli.logging_setup import configure_logging

    config = _config_or_exit(_passed({"redis_url": redis_url}), config_file)
    configure_logging(config.log_format, "warning")
    try:
        ok = trio.run(partial(run_demo, config, requests=requests))
    except PatientSidekiqError as exc:
        typer.echo(f"patient-sidekiq: {exc}", err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(0 if ok else 1)


def main() -> None:
    """Console-script entry point."""
    app()
