"""The demo's closing hint names a command the user can type as it is."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from patient_sidekiq.cli import demo


def test_a_venv_script_not_on_path_is_named_by_its_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script = tmp_path / ".venv" / "bin" / "patient-sidekiq"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", [str(script), "demo"])
    monkeypatch.setenv("PATH", "/nonexistent")
    assert demo._command_name() == os.path.join(".venv", "bin", "patient-sidekiq")


def test_a_script_on_path_is_named_plainly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    script = tmp_path / "bin" / "patient-sidekiq"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setattr("sys.argv", [str(script), "demo"])
    monkeypatch.setenv("PATH", str(script.parent))
    assert demo._command_name() == "patient-sidekiq"


def test_run_as_a_module_is_named_plainly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["/x/patient_sidekiq/__main__.py", "demo"])
    assert demo._command_name() == "patient-sidekiq"
