"""Which Ruby side the end-to-end interop suite runs against, and when a missing gem fails.

No processes: ``tests.support.oracle.oracle_root`` is replaced to pretend the gem is (not) built.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop import e2e_harness
from tests.interop.e2e_harness import SIDE_ENV, require_ruby_side, ruby_side

pytestmark = [pytest.mark.interop]


@pytest.fixture(autouse=True)
def fresh_choice(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(e2e_harness, "_USED", [])
    monkeypatch.delenv(SIDE_ENV, raising=False)
    monkeypatch.delenv("CI", raising=False)
    ruby_side.cache_clear()
    yield
    ruby_side.cache_clear()  # the session's real choice is made again on next use


def _gem(monkeypatch: pytest.MonkeyPatch, root: Path | None) -> None:
    monkeypatch.setattr("tests.support.oracle.oracle_root", lambda: root)


def test_the_real_gem_is_used_whenever_it_is_built(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _gem(monkeypatch, tmp_path)
    monkeypatch.setenv("CI", "1")
    side = require_ruby_side()
    assert side.real
    assert side.oracle == tmp_path
    assert side.banner().startswith("interop: Ruby side = REAL GEM")
    assert e2e_harness.ruby_side_used() == side


def test_without_the_gem_the_stand_in_runs_announced(monkeypatch: pytest.MonkeyPatch) -> None:
    _gem(monkeypatch, None)
    with pytest.warns(UserWarning, match="interop: Ruby side = STAND-IN"):
        side = require_ruby_side()
    assert not side.real
    assert "real gem not built" in side.banner()


@pytest.mark.parametrize("reason", ["CI", SIDE_ENV])
def test_a_missing_gem_fails_under_ci_or_when_asked_for(
    monkeypatch: pytest.MonkeyPatch, reason: str
) -> None:
    _gem(monkeypatch, None)
    monkeypatch.setenv(reason, "1" if reason == "CI" else "real")
    with pytest.raises(pytest.fail.Exception, match="the real gem is not built"):
        require_ruby_side()
    assert e2e_harness.ruby_side_used() is None


def test_the_stand_in_can_be_forced_even_with_the_gem_built(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _gem(monkeypatch, tmp_path)
    monkeypatch.setenv(SIDE_ENV, "standin")
    monkeypatch.setenv("CI", "1")
    with pytest.warns(UserWarning, match="STAND-IN"):
        side = require_ruby_side()
    assert not side.real
    assert f"{SIDE_ENV}=standin" in side.banner()
