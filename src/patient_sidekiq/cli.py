"""The ``patient-sidekiq`` command line (a typer app).

Only ``--version`` and ``--help`` exist so far; ``run``, ``enqueue``, ``status`` and
``inflight`` arrive with the processor and CLI work.
"""

from __future__ import annotations

import typer

from . import __version__

app = typer.Typer(
    name="patient-sidekiq",
    help="A Python worker for patient_http-sidekiq jobs, speaking Sidekiq's protocol.",
    no_args_is_help=True,
    add_completion=False,
)


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


def main() -> None:
    """Console-script entry point."""
    app()
