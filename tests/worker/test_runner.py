"""Runner's process set-up: the open-files limit a fan-out needs."""

from __future__ import annotations

import json
import logging
import resource
import subprocess
import sys

import pytest

from patient_sidekiq.worker import runner


def test_the_soft_limit_is_raised_to_the_hard_one(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    limits = {"now": (1024, 65536)}
    monkeypatch.setattr(resource, "getrlimit", lambda _: limits["now"])

    def setrlimit(_: int, value: tuple[int, int]) -> None:
        limits["now"] = value

    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    assert runner.raise_open_files_limit(10_000) == 65536
    assert limits["now"] == (65536, 65536)
    assert "open-files limit" not in caplog.text


def test_a_hard_limit_below_the_connections_is_named_with_what_to_set(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _: (4096, 4096))
    with caplog.at_level(logging.WARNING):
        assert runner.raise_open_files_limit(10_000) == 4096
    assert "open-files limit 4096 is below max_connections 10000" in caplog.text
    assert "at least 10256" in caplog.text
    assert "LimitNOFILE=" in caplog.text


def test_a_refused_raise_is_reported_and_the_old_limit_kept(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 65536))

    def refuse(_: int, __: tuple[int, int]) -> None:
        raise ValueError("not allowed")

    monkeypatch.setattr(resource, "setrlimit", refuse)
    with caplog.at_level(logging.WARNING):
        assert runner.raise_open_files_limit(100) == 1024
    assert "could not raise the open-files limit from 1024 to 65536" in caplog.text


def test_settle_gc_freezes_start_up_and_enlarges_the_young_generation() -> None:
    # In a child: the collector's settings are process-wide, and pytest's must stay as they are.
    code = (
        "import gc, json\n"
        "from patient_sidekiq.worker.runner import settle_gc\n"
        "before = gc.get_freeze_count()\n"
        "settle_gc()\n"
        "print(json.dumps([before, gc.get_freeze_count(), gc.get_threshold()]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    before, after, thresholds = json.loads(out)
    assert before == 0
    assert after > 10_000  # every module imported so far is out of the collections
    assert thresholds == list(runner.GC_THRESHOLDS)
    assert thresholds[0] > 700  # larger than CPython's default
