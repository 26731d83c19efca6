"""Run short Ruby programs (real Ruby, real ActiveSupport) and exchange JSON with them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest


def run_ruby(program: str, payload: Any) -> Any:
    """Run ``program`` with ``payload`` as JSON on stdin; return its stdout parsed as JSON."""
    ruby = shutil.which("ruby")
    if ruby is None:
        message = "ruby is not installed (scripts/setup installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        [ruby, "-e", program],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"ruby failed ({result.returncode}):\n{result.stderr}")
    return json.loads(result.stdout)
