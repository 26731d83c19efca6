"""Where the real gem is: the oracle built from ``../shared/oracle`` (patient_http 1.3.0 +
patient_http-sidekiq 1.0.1 in Sidekiq 7.3.10).

``scripts/test`` builds ``../shared/oracle`` into ``.oracle/`` (ignored) when it exists and
exports ``ORACLE_ROOT``. Tests that need the real gem call :func:`require_oracle`: under CI a
missing oracle is a failure, never a silent skip or fallback. :func:`oracle_env` is the
environment of a Ruby process that loads the real gems (what the oracle's ``env.sh`` sets).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILT = ROOT / ".oracle"
SOURCE = ROOT.parent / "shared" / "oracle"
GEMS = (
    "patient_http-sidekiq-1.0.1",
    "patient_http-1.3.0",
    "sidekiq-7.3.10",
    "redis-client-0.26.4",
    "connection_pool-2.5.5",
)


def oracle_root() -> Path | None:
    """The built oracle (``$ORACLE_ROOT``, else ``.oracle/``), or None when there is none."""
    configured = os.environ.get("ORACLE_ROOT")
    candidates = [Path(configured)] if configured else []
    candidates.append(BUILT)
    for candidate in candidates:
        if (candidate / "env.sh").is_file() and (candidate / "lib" / "oracle_boot.rb").is_file():
            return candidate.resolve()
    return None


def require_oracle() -> Path:
    """The built oracle; fail under CI when it is missing, else skip the test."""
    root = oracle_root()
    if root is None:
        message = (
            "the real gem is not built (scripts/test builds ../shared/oracle into .oracle/ "
            "when ../shared/oracle exists)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return root


def oracle_env(root: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this environment) plus what the oracle's ``env.sh`` exports."""
    env = dict(os.environ if base is None else base)
    rubylib = ":".join([str(root / "lib"), *(str(root / "vendor" / gem / "lib") for gem in GEMS)])
    env["ORACLE_ROOT"] = str(root)
    env["ORACLE_VENDOR"] = str(root / "vendor")
    env["RUBYLIB"] = rubylib + (":" + env["RUBYLIB"] if env.get("RUBYLIB") else "")
    env["PATH"] = f"{root / 'bin'}:{env.get('PATH', '')}"
    return env
