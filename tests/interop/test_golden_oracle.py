"""The in-repo golden vectors still match what the real gem produces today.

Every unit test reads ``tests/golden/golden.json`` (a copy, so a clone without ``../shared``
tests on its own). A copy can drift from the gem it claims to describe; this test regenerates
the vectors with the real gem's ``bin/golden.rb`` and compares the two with the oracle's own
``bin/golden_check.py``, which ignores only what is random by nature (jids, ids, IVs, gzip
mtimes) and decrypts ciphertexts with the real gem before comparing them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.golden import GOLDEN_PATH
from tests.support.oracle import oracle_env, require_oracle
from tests.support.programs import require_binary

pytestmark = pytest.mark.interop


def test_golden_vectors_match_the_real_gem(tmp_path: Path) -> None:
    root = require_oracle()
    ruby = require_binary("ruby")
    env = oracle_env(root)
    fresh = tmp_path / "golden.json"
    made = subprocess.run(
        [ruby, str(root / "bin" / "golden.rb"), "--out", str(fresh)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert made.returncode == 0, f"bin/golden.rb failed ({made.returncode}):\n{made.stderr}"
    # golden_check.py decrypts through the oracle named by ORACLE_ROOT (set by oracle_env),
    # one Ruby process per distinct envelope: seconds, hence the generous timeout.
    checked = subprocess.run(
        [sys.executable, str(root / "bin" / "golden_check.py"), str(GOLDEN_PATH), str(fresh)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    report = checked.stdout + checked.stderr
    lines = checked.stdout.strip().splitlines()
    assert lines, f"golden_check.py printed nothing:\n{report}"
    assert lines[-1] == "0 differences", (
        "tests/golden/golden.json no longer matches the real gem "
        f"(scripts/refresh_golden regenerates it):\n{report}"
    )
    assert checked.returncode == 0, report
