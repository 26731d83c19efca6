"""The byte-exact vectors made by the real Ruby classes (the gem's bin/golden.rb).

Kept in the repository (``tests/golden/golden.json``) so a clone tests without ../shared;
tests/interop/test_golden_oracle.py checks them against the real gem and scripts/refresh_golden
regenerates them. Tests take the ``golden`` fixture (tests/conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GOLDEN_PATH = Path(__file__).resolve().parents[1] / "golden" / "golden.json"


def load_golden() -> dict[str, Any]:
    """A fresh copy of the golden vectors (for module-level parametrisation; tests take the
    ``golden`` fixture)."""
    with GOLDEN_PATH.open(encoding="utf-8") as handle:
        data: dict[str, Any] = json.load(handle)
    return data
