"""sd_notify (worker/systemd_notify.py) to a real unix datagram socket."""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from patient_sidekiq.worker.systemd_notify import SystemdNotifier


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # A unix socket path must fit in 108 bytes; pytest's tmp_path may not.
    with tempfile.TemporaryDirectory(prefix="ps-notify-") as directory:
        yield Path(directory)


def receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + address[1:] if address.startswith("@") else address)
    sock.settimeout(5)
    return sock


def test_no_notify_socket_no_notifier() -> None:
    assert SystemdNotifier.from_environ({}) is None
    assert SystemdNotifier.from_environ({"NOTIFY_SOCKET": ""}) is None
    assert SystemdNotifier.from_environ({"NOTIFY_SOCKET": "relative/path"}) is None


def test_the_watchdog_interval_is_half_of_watchdog_usec_for_this_process_only() -> None:
    env = {"NOTIFY_SOCKET": "/run/notify", "WATCHDOG_USEC": "30000000"}
    notifier = SystemdNotifier.from_environ(env, pid=42)
    assert notifier is not None
    assert notifier.watchdog_interval == 15.0
    mine = SystemdNotifier.from_environ({**env, "WATCHDOG_PID": "42"}, pid=42)
    assert mine is not None
    assert mine.watchdog_interval == 15.0
    other = SystemdNotifier.from_environ({**env, "WATCHDOG_PID": "7"}, pid=42)
    assert other is not None
    assert other.watchdog_interval is None
    bad = SystemdNotifier.from_environ({**env, "WATCHDOG_USEC": "soon"}, pid=42)
    assert bad is not None
    assert bad.watchdog_interval is None


def test_messages_reach_a_path_socket(short_dir: Path) -> None:
    address = str(short_dir / "notify")
    with receiver(address) as sock:
        notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": address})
        assert notifier is not None
        assert notifier.notify("READY=1", "STATUS=running: 0 of 8 requests in flight")
        assert notifier.notify("STOPPING=1")
        notifier.close()
        assert sock.recv(4096) == b"READY=1\nSTATUS=running: 0 of 8 requests in flight"
        assert sock.recv(4096) == b"STOPPING=1"


def test_messages_reach_an_abstract_socket() -> None:
    address = f"@patient-sidekiq-test-{os.getpid()}-{secrets.token_hex(4)}"
    with receiver(address) as sock:
        notifier = SystemdNotifier(address)
        assert notifier.notify("WATCHDOG=1")
        notifier.close()
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_a_missing_socket_is_logged_once_and_never_raises(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = SystemdNotifier(str(short_dir / "nobody"))
    assert not notifier.notify("READY=1")
    assert not notifier.notify("WATCHDOG=1")
    notifier.close()
    assert caplog.text.count("could not notify systemd") == 1
