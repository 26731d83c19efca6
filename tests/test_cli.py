import subprocess
import sys

from typer.testing import CliRunner

from patient_sidekiq import __version__
from patient_sidekiq.cli import app

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
