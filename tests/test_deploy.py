"""The Dockerfile and the systemd unit (deploy/) say what the worker does.

Checked here without a container runtime or systemd running: the Dockerfile's essentials (a
slim Python base, a non-root user, the same package files ``tests/test_install.py`` builds a
wheel from, a HEALTHCHECK whose command is run against a real worker), and the unit's
contract with the worker (``Type=notify`` with a watchdog, exit 78 not restarted, a stop
timeout above ``shutdown_timeout``), verified by ``systemd-analyze verify`` where it exists.
``docker build`` runs only where a Docker daemon answers.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import redis

from patient_sidekiq.config.model import DEFAULTS
from tests.support.programs import REPO, free_port
from tests.support.scripts import started, user_environ
from tests.test_install import PACKAGE_FILES

DOCKERFILE = REPO / "Dockerfile"
UNIT = REPO / "deploy" / "patient-sidekiq.service"


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines()]
    return [
        (word.upper(), rest.strip())
        for word, _, rest in (line.partition(" ") for line in lines if line and line[0] != "#")
    ]


def instruction(name: str) -> list[str]:
    return [rest for word, rest in instructions() if word == name]


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, value
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)


# --- Dockerfile ---


def test_dockerfile_builds_from_a_slim_python_and_runs_as_a_user() -> None:
    [base] = instruction("FROM")
    assert re.fullmatch(r"python:3\.(1[1-9])-slim(-\w+)?", base), base
    users = instruction("USER")
    assert users, "the image must not run as root"
    assert users[-1] not in ("root", "0")
    # The user is switched to after installing, so the package files are not its to change.
    order = [word for word, _ in instructions()]
    assert order.index("USER") > max(i for i, word in enumerate(order) if word == "RUN")
    assert json.loads(instruction("ENTRYPOINT")[0]) == ["patient-sidekiq"]
    assert json.loads(instruction("CMD")[-1]) == ["run"]
    assert instruction("STOPSIGNAL") == ["SIGTERM"]
    assert instruction("EXPOSE") == ["9394"]


def test_the_image_gets_exactly_the_package_files() -> None:
    copied = set()
    for rest in instruction("COPY"):
        *sources, _target = rest.split()
        copied |= set(sources)
    assert copied == set(PACKAGE_FILES)
    allowed = {
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    }
    assert allowed == set(PACKAGE_FILES)
    assert "*" in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()


def healthcheck_command() -> list[str]:
    [healthcheck] = instruction("HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD ")
    assert "--interval=" in options
    argv: list[str] = json.loads(command)
    return argv


def test_the_healthcheck_passes_against_a_running_worker_and_fails_without_one(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    argv = healthcheck_command()
    assert argv[0] == "python"
    check = [shutil.which("python3") or "python3", *argv[1:]]
    port = str(free_port())
    # The image's environment: the metrics port its ENV sets, here a free one.
    env = user_environ(PATIENT_HTTP_METRICS_PORT=port)
    worker_argv = [str(REPO / ".venv" / "bin" / "patient-sidekiq"), "run", "--redis-url", redis_url]
    with started(worker_argv, tmp_path, env, tmp_path / "worker") as worker:
        worker.wait_for(lambda: redis_client.smembers("processes"), "the worker to join")
        probe = subprocess.run(check, env=env, capture_output=True, timeout=10)
        assert probe.returncode == 0, probe.stderr
        worker.process.send_signal(signal.SIGTERM)
        assert worker.wait() == 0, worker.tail()
    probe = subprocess.run(check, env=env, capture_output=True, timeout=10)
    assert probe.returncode != 0


def test_docker_build() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client: the image is not built here")
    info = subprocess.run([docker, "info"], capture_output=True, timeout=30)
    if info.returncode != 0:
        pytest.skip("docker client present but no Docker daemon answers: the image is not built")
    built = subprocess.run(
        [docker, "build", "-q", "-t", "patient-sidekiq:test", str(REPO)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert built.returncode == 0, built.stderr
    ran = subprocess.run(
        [docker, "run", "--rm", "patient-sidekiq:test", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip()


# --- systemd ---


def test_the_unit_matches_the_worker() -> None:
    unit = unit_settings()
    assert unit["Type"] == ["notify"]  # the worker sends READY=1, then WATCHDOG=1
    assert seconds(unit["WatchdogSec"][0]) >= 10  # the worker pings at most 5 s apart
    assert "NotifyAccess" not in unit  # "main": only the supervisor speaks for the service
    assert "78" in unit["RestartPreventExitStatus"][0].split()  # configuration errors
    assert unit["Restart"] == ["on-failure"]
    shutdown_timeout = DEFAULTS["shutdown_timeout"]
    assert isinstance(shutdown_timeout, float)
    assert seconds(unit["TimeoutStopSec"][0]) > shutdown_timeout + 5
    assert unit["KillSignal"] == ["SIGTERM"]
    assert unit["KillMode"] == ["mixed"]
    assert unit["User"][0] not in ("root", "0")
    max_connections = DEFAULTS["max_connections"]
    assert isinstance(max_connections, int)
    assert int(unit["LimitNOFILE"][0]) >= max_connections + 256
    [exec_start] = unit["ExecStart"]
    assert exec_start.split()[0].endswith("/bin/patient-sidekiq")
    assert exec_start.split()[1] == "run"
    assert unit["WantedBy"] == ["multi-user.target"]


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the unit is not verified here")
    # verify checks that ExecStart's program exists: point it at this checkout's.
    text = UNIT.read_text(encoding="utf-8")
    [program] = re.findall(r"^ExecStart=(\S+)", text, re.M)
    copy = tmp_path / "patient-sidekiq.service"
    copy.write_text(text.replace(program, str(REPO / ".venv" / "bin" / "patient-sidekiq")))
    verified = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    # verify exits 0 after settings it could not parse, but names the file on each of them.
    problems = [line for line in verified.stderr.splitlines() if copy.name in line]
    assert verified.returncode == 0, verified.stderr
    assert problems == []
