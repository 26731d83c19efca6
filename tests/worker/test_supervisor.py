"""The supervisor with real child processes (tests/support/supervised_child.py) and real signals."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
import trio

from patient_sidekiq.errors import ConfigurationError
from patient_sidekiq.worker.supervisor import (
    CHILD_INDEX_ENV,
    EX_CONFIG,
    Supervisor,
    SupervisorSettings,
    child_index,
    supervise,
)
from tests.support.programs import REPO
from tests.support.waiting import eventually, wait_for

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def settings_for(directory: Path, *options: str, **fields: Any) -> SupervisorSettings:
    fields.setdefault("processes", 2)
    fields.setdefault("restart_delay", 0.01)
    fields.setdefault("stop_timeout", 10.0)
    argv = [sys.executable, "-m", "tests.support.supervised_child", str(directory), *options]
    return SupervisorSettings(child_argv=argv, env=ENV, handle_os_signals=False, **fields)


def logs(directory: Path, index: int) -> dict[int, list[str]]:
    """pid -> the lines child ``index`` with that pid wrote, oldest pid first."""
    found = sorted(directory.glob(f"{index}.*"), key=lambda path: path.stat().st_mtime_ns)
    return {int(path.suffix[1:]): path.read_text().splitlines() for path in found}


def lines_of(directory: Path, pid: int) -> list[str]:
    """The lines child ``pid`` wrote so far (none before it started writing)."""
    found = list(directory.glob(f"*.{pid}"))
    return found[0].read_text().splitlines() if found else []


def wrote(directory: Path, pid: int, line: str) -> Callable[[], bool]:
    """A check: child ``pid`` wrote ``line``."""
    return lambda: line in lines_of(directory, pid)


def all_ready(directory: Path, supervisor: Supervisor) -> bool:
    pids = supervisor.pids()
    return len(pids) == supervisor.settings.processes and all(
        "ready" in lines_of(directory, pid) for pid in pids.values()
    )


class Running:
    """``supervise`` in a nursery: the supervisor once started, the exit status once done."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.code: int | None = None

    async def run(self, settings: SupervisorSettings, *, task_status: Any) -> None:
        self.code = await supervise(settings, task_status=task_status)
        self.done.set()

    async def result(self, seconds: float = 15) -> int | None:
        with trio.fail_after(seconds):
            await self.done.wait()
        return self.code


async def start(nursery: trio.Nursery, settings: SupervisorSettings) -> tuple[Supervisor, Running]:
    running = Running()
    supervisor: Supervisor = await nursery.start(running.run, settings)
    return supervisor, running


def restart_delays(caplog: pytest.LogCaptureFixture) -> list[float]:
    return [
        float(cast(tuple[Any, ...], record.args)[-1])
        for record in caplog.records
        if "restarting in" in record.msg
    ]


@pytest.fixture(autouse=True)
def _info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="patient_sidekiq.worker.supervisor")


async def test_children_get_distinct_indexes_and_term_stops_them(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        supervisor, running = await start(nursery, settings_for(tmp_path, processes=3))
        assert sorted(supervisor.pids()) == [0, 1, 2]
        await eventually(lambda: all_ready(tmp_path, supervisor))
        pids = supervisor.pids()
        supervisor.handle_signal(signal.SIGTERM)
        assert await running.result() == 0
    for index, pid in pids.items():
        assert logs(tmp_path, index) == {pid: ["start", "ready", "TERM", "stopped"]}
    assert supervisor.pids() == {}


async def test_tstp_is_forwarded_and_a_killed_child_restarts_quiet(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with trio.open_nursery() as nursery:
        supervisor, running = await start(nursery, settings_for(tmp_path))
        await eventually(lambda: all_ready(tmp_path, supervisor))
        supervisor.handle_signal(signal.SIGTSTP)
        assert supervisor.quieting
        for pid in supervisor.pids().values():
            await eventually(wrote(tmp_path, pid, "TSTP"))

        old = supervisor.pids()[0]
        os.kill(old, signal.SIGKILL)
        new = await eventually(
            lambda: supervisor.pids().get(0, old) != old and supervisor.pids()[0]
        )
        # Quiet is the supervisor's state: the new child gets TSTP once it can handle it.
        await eventually(lambda: lines_of(tmp_path, new)[-1:] == ["TSTP"])
        assert lines_of(tmp_path, new) == ["start", "ready", "TSTP"]
        assert f"child 0 (pid {old}) ended: killed by SIGKILL" in caplog.text

        supervisor.handle_signal(signal.SIGTERM)
        assert await running.result() == 0
    assert logs(tmp_path, 0)[new][-2:] == ["TERM", "stopped"]
    assert len(logs(tmp_path, 1)) == 1


async def test_tstp_waits_until_a_starting_child_handles_it(tmp_path: Path) -> None:
    # Before its handler exists, TSTP would suspend the child instead of quieting it.
    settings = settings_for(tmp_path, "--ready-after", "0.5", processes=1, stop_timeout=5.0)
    async with trio.open_nursery() as nursery:
        supervisor, running = await start(nursery, settings)
        supervisor.handle_signal(signal.SIGTSTP)
        pid = supervisor.pids()[0]
        await eventually(lambda: "TSTP" in lines_of(tmp_path, pid))
        assert lines_of(tmp_path, pid) == ["start", "ready", "TSTP"]
        supervisor.handle_signal(signal.SIGTERM)
        assert await running.result() == 0


async def test_ttin_and_hup_are_forwarded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with trio.open_nursery() as nursery:
        supervisor, running = await start(nursery, settings_for(tmp_path))
        await eventually(lambda: all_ready(tmp_path, supervisor))
        # One at a time: a process runs the handlers of pending signals lowest number first.
        for signum, name in [(signal.SIGTTIN, "TTIN"), (signal.SIGHUP, "HUP")]:
            supervisor.handle_signal(signum)
            for pid in supervisor.pids().values():
                await eventually(wrote(tmp_path, pid, name))
        for pid in supervisor.pids().values():
            assert lines_of(tmp_path, pid)[2:] == ["TTIN", "HUP"]
        assert "TTIN: 2 children" in caplog.text
        supervisor.handle_signal(signal.SIGINT)
        assert await running.result() == 0


async def test_exit_78_stops_every_child_and_returns_78(tmp_path: Path) -> None:
    marker = tmp_path / "fail-now"
    options = ("--exit", "78", "--exit-index", "1", "--exit-when", str(marker))
    async with trio.open_nursery() as nursery:
        supervisor, running = await start(nursery, settings_for(tmp_path, *options, processes=3))
        await eventually(lambda: all_ready(tmp_path, supervisor))
        marker.touch()
        assert await running.result() == EX_CONFIG
    assert list(logs(tmp_path, 1).values()) == [["start", "ready", "exit 78"]]
    for index in (0, 2):
        assert list(logs(tmp_path, index).values()) == [["start", "ready", "TERM", "stopped"]]


async def test_a_child_ignoring_term_is_killed_after_stop_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(tmp_path, "--ignore-term", processes=1, stop_timeout=0.3)
    async with trio.open_nursery() as nursery:
        supervisor, running = await start(nursery, settings)
        await eventually(lambda: all_ready(tmp_path, supervisor))
        pid = supervisor.pids()[0]
        supervisor.handle_signal(signal.SIGTERM)
        assert await running.result() == 1
    assert lines_of(tmp_path, pid) == ["start", "ready", "TERM"]
    assert f"child 0 (pid {pid}) did not stop within 0.3 s: killing it" in caplog.text
    assert f"child 0 (pid {pid}) ended: killed by SIGKILL" in caplog.text


async def test_restart_delay_doubles_up_to_the_maximum(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(
        tmp_path, "--exit", "3", processes=1, restart_delay=0.01, max_restart_delay=0.04
    )
    async with trio.open_nursery() as nursery:
        supervisor, running = await start(nursery, settings)
        await eventually(lambda: len(restart_delays(caplog)) >= 5)
        supervisor.handle_signal(signal.SIGTERM)
        assert await running.result() == 0
    assert restart_delays(caplog)[:5] == [0.01, 0.02, 0.04, 0.04, 0.04]
    assert "exit status 3" in caplog.text


async def test_restart_delay_resets_after_a_stable_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    options = ("--exit", "3", "--exit-after", "0.2")
    settings = settings_for(tmp_path, *options, processes=1, restart_delay=0.01, stable_after=0.1)
    async with trio.open_nursery() as nursery:
        supervisor, running = await start(nursery, settings)
        await eventually(lambda: len(restart_delays(caplog)) >= 3)
        supervisor.handle_signal(signal.SIGTERM)
        assert await running.result() == 0
    assert restart_delays(caplog)[:3] == [0.01, 0.01, 0.01]


async def test_a_command_that_cannot_start_stops_with_78(tmp_path: Path) -> None:
    settings = SupervisorSettings(
        processes=2, child_argv=[str(tmp_path / "missing")], handle_os_signals=False
    )
    with trio.fail_after(10):
        assert await supervise(settings) == EX_CONFIG


async def test_real_signals_reach_an_embedded_supervisor(tmp_path: Path) -> None:
    # The OS signal path in this very process: the receiver is open while supervise runs.
    settings = SupervisorSettings(
        processes=1,
        child_argv=[sys.executable, "-m", "tests.support.supervised_child", str(tmp_path)],
        env=ENV,
    )
    async with trio.open_nursery() as nursery:
        supervisor, running = await start(nursery, settings)
        await eventually(lambda: all_ready(tmp_path, supervisor))
        pid = supervisor.pids()[0]
        os.kill(os.getpid(), signal.SIGTSTP)
        await eventually(lambda: "TSTP" in lines_of(tmp_path, pid))
        os.kill(os.getpid(), signal.SIGTERM)
        assert await running.result() == 0
    assert lines_of(tmp_path, pid) == ["start", "ready", "TSTP", "TERM", "stopped"]


SUPERVISOR_SCRIPT = """
import logging, signal, sys
from patient_sidekiq.worker.supervisor import SupervisorSettings, run_supervisor
logging.basicConfig(level=logging.INFO)
if sys.argv[2] == "nohup":
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
argv = [sys.executable, "-m", "tests.support.supervised_child", sys.argv[1]]
sys.exit(run_supervisor(SupervisorSettings(2, argv, restart_delay=0.05)))
"""


def ready_children(directory: Path) -> dict[int, int]:
    """index -> pid of each child that wrote ``ready`` (one pid per index in these tests)."""
    return {
        index: pid
        for index in (0, 1)
        for pid, lines in logs(directory, index).items()
        if "ready" in lines
    }


@pytest.mark.parametrize(
    ("stop_signal", "hup"), [(signal.SIGTERM, "catch"), (signal.SIGINT, "nohup")]
)
def test_os_signals_to_a_supervisor_process(tmp_path: Path, stop_signal: int, hup: str) -> None:
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR_SCRIPT, str(tmp_path), hup],
        cwd=REPO,
        env=ENV,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        children = wait_for(lambda: len(ready_children(tmp_path)) == 2 and ready_children(tmp_path))
        for signum, name in [(signal.SIGTSTP, "TSTP"), (signal.SIGTTIN, "TTIN")]:
            os.kill(supervisor.pid, signum)
            for pid in children.values():
                wait_for(wrote(tmp_path, pid, name))
        os.kill(supervisor.pid, signal.SIGHUP)
        if hup == "catch":
            for pid in children.values():
                wait_for(wrote(tmp_path, pid, "HUP"))
        os.kill(supervisor.pid, stop_signal)
        _, stderr = supervisor.communicate(timeout=15)
        assert supervisor.returncode == 0, stderr
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
    # Whatever stopped the supervisor, the children get TERM; HUP only when not under nohup.
    hup_lines = ["HUP"] if hup == "catch" else []
    for index, pid in children.items():
        assert logs(tmp_path, index) == {
            pid: ["start", "ready", "TSTP", "TTIN", *hup_lines, "TERM", "stopped"]
        }
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError):
        SupervisorSettings(processes=0, child_argv=["x"])
    with pytest.raises(ConfigurationError):
        SupervisorSettings(processes=1, child_argv=[])
    with pytest.raises(ConfigurationError):
        SupervisorSettings(processes=1, child_argv=["x"], restart_delay=-1)


def test_child_index() -> None:
    assert child_index({CHILD_INDEX_ENV: "3"}) == 3
    assert child_index({}) is None
