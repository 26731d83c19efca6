"""Free loopback ports and the programs scripts/setup installs."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

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
