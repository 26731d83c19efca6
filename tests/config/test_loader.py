"""load_config's default Redis inside the repository: the URL scripts/run's embedded server left.

Each test points ``PATIENT_SIDEKIQ_RUN_DIR`` at its own directory and writes ``redis/url`` and
``redis/pid`` there as scripts/run does; the live server is the session's real redis-server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from patient_sidekiq.config.loader import load_config
from patient_sidekiq.errors import ConfigurationError
from tests.support.programs import REPO
from tests.support.redis import RedisServer

DEFAULT_URL = "redis://localhost:6379/0"


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scripts/run directory, with this process's environment free of any Redis setting and
    its working directory inside the repository."""
    for name in list(os.environ):
        if name.startswith("PATIENT_HTTP_") or name in ("REDIS_URL", "REDIS_PROVIDER"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PATIENT_SIDEKIQ_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.chdir(REPO / "src")
    (tmp_path / "run" / "redis").mkdir(parents=True)
    return tmp_path / "run"


def publish(run_dir: Path, url: str, pid: int) -> None:
    (run_dir / "redis" / "url").write_text(url + "\n")
    (run_dir / "redis" / "pid").write_text(f"{pid}\n")


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_without_a_url_file_the_default_stays(run_dir: Path) -> None:
    assert load_config().redis_url == DEFAULT_URL


def test_the_embedded_server_is_the_default_inside_the_repository(
    run_dir: Path, redis_server: RedisServer
) -> None:
    assert redis_server.pid is not None
    publish(run_dir, redis_server.url, redis_server.pid)
    assert load_config().redis_url == redis_server.url


def test_any_setting_wins_over_the_file(
    run_dir: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(run_dir, "redis://127.0.0.1:1/0", dead_pid())  # stale, yet never consulted
    assert load_config(flags={"redis_url": redis_server.url}).redis_url == redis_server.url
    assert load_config(flags={"redis_sentinels": ["s1:26379"], "redis_sentinel_master": "m"})
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    assert load_config().redis_url == redis_server.url


def test_outside_the_repository_or_with_a_given_env_the_file_is_ignored(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(run_dir, "redis://127.0.0.1:1/0", dead_pid())
    assert load_config(env={}).redis_url == DEFAULT_URL
    monkeypatch.chdir(tmp_path)
    assert load_config().redis_url == DEFAULT_URL


@pytest.mark.parametrize("owner", ["gone", "recycled"])
def test_a_url_file_whose_server_is_gone_is_a_clear_error(run_dir: Path, owner: str) -> None:
    # A pid nobody runs, or one the kernel gave to another program since.
    pid = dead_pid() if owner == "gone" else os.getpid()
    publish(run_dir, "redis://127.0.0.1:45678/0", pid)
    with pytest.raises(ConfigurationError) as caught:
        load_config()
    url_file = run_dir / "redis" / "url"
    assert str(caught.value) == (
        f"redis_url: {url_file} names the Redis scripts/run started "
        f"(redis://127.0.0.1:45678/0), but its redis-server (pid {pid}) no longer runs: "
        f"start scripts/run again, set REDIS_URL or --redis-url, or delete {url_file}"
    )


def test_a_url_file_without_a_pid_is_an_error(run_dir: Path) -> None:
    (run_dir / "redis" / "url").write_text("redis://127.0.0.1:45678/0\n")
    with pytest.raises(ConfigurationError, match=r"but its redis-server no longer runs"):
        load_config()
