"""Run short Ruby programs (real Ruby, real ActiveSupport) and exchange JSON with them."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.conftest import require_binary

SIDEKIQ_CLIENT = """
require "json"
require "sidekiq"
require "sidekiq/api"
input = JSON.parse($stdin.read)
Sidekiq.logger = Logger.new(nil)
Sidekiq.configure_client { |c| c.redis = {url: input["url"]} }
"""
"""Ruby preamble: read the JSON input and point Sidekiq's client API at ``input["url"]``."""


def run_ruby(program: str, payload: Any) -> Any:
    """Run ``program`` with ``payload`` as JSON on stdin; return its last stdout line as JSON."""
    return run_ruby_args(["-e", program], payload)


def run_ruby_args(arguments: list[str], payload: Any) -> Any:
    """Run ``ruby *arguments`` (a program or a script file) like :func:`run_ruby`."""
    ruby = require_binary("ruby")
    result = subprocess.run(
        [ruby, *arguments],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"ruby failed ({result.returncode}):\n{result.stderr}")
    # Libraries may log to stdout; the program's answer is its last line.
    return json.loads(result.stdout.rstrip("\n").split("\n")[-1])
