"""Run short Ruby programs (real Ruby, real ActiveSupport) and exchange JSON with them."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.interop.e2e_harness import ruby_side_banner, ruby_side_used
from tests.support.programs import require_binary


def pytest_report_header(config: pytest.Config) -> str:
    """Say which Ruby side the end-to-end interop suite runs against (shown when pytest is
    started on ``tests/interop``; the terminal summary says it in every case)."""
    return ruby_side_banner()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Repeat, after the run, which Ruby side the end-to-end interop tests ran against."""
    used = ruby_side_used()
    if used is not None:
        terminalreporter.write_line(used.banner(), yellow=not used.real, bold=True)


SIDEKIQ_CLIENT = """
require "json"
require "sidekiq"
require "sidekiq/api"
input = JSON.parse($stdin.read)
Sidekiq.configure_client do |c|
  c.logger = Logger.new(nil)  # Sidekiq 6.4 (Debian) and 7.3 (the real gem's) alike
  c.redis = {url: input["url"]}
end
"""
"""Ruby preamble: read the JSON input and point Sidekiq's client API at ``input["url"]``."""


def run_ruby(program: str, payload: Any, env: dict[str, str] | None = None) -> Any:
    """Run ``program`` with ``payload`` as JSON on stdin; return its last stdout line as JSON."""
    return run_ruby_args(["-e", program], payload, env)


def run_ruby_args(arguments: list[str], payload: Any, env: dict[str, str] | None = None) -> Any:
    """Run ``ruby *arguments`` (a program or a script file) like :func:`run_ruby`.

    ``env`` (default: this process's environment) is the whole environment of the Ruby
    process; the end-to-end harness passes the real gem's load path there.
    """
    ruby = require_binary("ruby")
    result = subprocess.run(
        [ruby, *arguments],
        input=json.dumps(payload),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"ruby failed ({result.returncode}):\n{result.stderr}")
    # Libraries may log to stdout; the program's answer is its last line.
    return json.loads(result.stdout.rstrip("\n").split("\n")[-1])
