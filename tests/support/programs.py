"""Free loopback ports and the programs scripts/setup installs."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
"""The repository (the working directory of the processes the tests start)."""


def free_port() -> int:
    """Return a loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_binary(name: str) -> str:
    """Return the path of a program scripts/setup installs; fail under CI, else skip."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (scripts/setup installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def stop_process(process: subprocess.Popen[Any] | None, seconds: float = 10) -> None:
    """SIGTERM ``process`` and reap it, SIGKILL after ``seconds``: a server of ours never
    outlives its test or benchmark. Nothing to do when it was never started or has ended."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
