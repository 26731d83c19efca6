"""OS signals reach a real worker process: TSTP quiets it, TERM stops it cleanly."""

import os
import signal
import subprocess
import sys

import pytest
import redis

from tests.support.programs import REPO
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


def test_tstp_quiets_and_term_stops(redis_url: str, redis_client: redis.Redis) -> None:
    identity = "sigbox:1:aaaabbbbcccc"
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.support.launcher_main", redis_url, identity], cwd=REPO
    )
    try:
        wait_for(lambda: redis_client.hget(identity, "quiet") == b"false")
        os.kill(worker.pid, signal.SIGTSTP)
        wait_for(lambda: redis_client.hget(identity, "quiet") == b"true")
        os.kill(worker.pid, signal.SIGTERM)
        assert worker.wait(timeout=15) == 0
        assert not redis_client.sismember("processes", identity)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
