"""The package installs into someone else's application and runs from there.

The README's "Install into your application", at a test's cost: a wheel is built with
``python -m build --wheel --no-isolation`` (the venv of ``scripts/setup --dev`` holds the build
tools, so nothing is downloaded) from exactly the files the Dockerfile copies, installed with
``pip install --no-deps --target`` (the dependencies already in this venv serve; the target on
PYTHONPATH comes before the venv's editable install), and its ``patient-sidekiq`` console script
runs a worker from an application's directory with ``-r`` of that application's module.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import redis

from patient_sidekiq.client.enqueue import Client
from tests.support.programs import REPO
from tests.support.scripts import json_api, started, user_environ

pytestmark = pytest.mark.integration

# What the Dockerfile copies (tests/test_deploy.py keeps the two lists equal).
PACKAGE_FILES = ("pyproject.toml", "README.md", "LICENSE", "src")

CALLBACKS = """\
import json
import os

import patient_sidekiq


@patient_sidekiq.callback("Shop::OrderFetched")
class OrderFetched:
    def on_complete(self, response):
        with open(os.environ["SHOP_RECORD"], "a") as record:
            record.write(json.dumps({
                "status": response.status,
                "json": response.json(),
                "order": response.callback_args["order"],
                "package": patient_sidekiq.__file__,
            }) + "\\n")

    def on_error(self, error):
        raise AssertionError(error.message)
"""


def build_wheel(tmp_path: Path) -> Path:
    context = tmp_path / "context"
    context.mkdir()
    for name in PACKAGE_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, context / name)
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist)],
        cwd=context,
        check=True,
        capture_output=True,
    )
    [wheel] = dist.glob("patient_sidekiq-*-py3-none-any.whl")
    return wheel


def test_a_wheel_installed_into_an_app_runs_its_callbacks(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert "patient_sidekiq/py.typed" in names
    assert any(name.endswith(".lua") for name in names)  # package data travels with it
    assert not any(name.startswith("tests/") for name in names)

    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), wheel],
        check=True,
        capture_output=True,
    )
    app = tmp_path / "shop"
    (app / "shop").mkdir(parents=True)
    (app / "shop" / "callbacks.py").write_text(CALLBACKS)
    record = tmp_path / "record.jsonl"
    env = user_environ(PYTHONPATH=str(site), SHOP_RECORD=str(record))
    argv = [str(site / "bin" / "patient-sidekiq"), "run", "-r", "shop.callbacks"]
    argv += ["--redis-url", redis_url, "--heartbeat-interval", "1", "--orphan-threshold", "5"]
    with json_api() as api, started(argv, app, env, tmp_path / "worker") as worker:
        worker.wait_for(
            lambda: len(redis_client.smembers("processes")) == 2,  # type: ignore[arg-type]
            "the HTTP and the callbacks launchers",
        )
        with Client(redis_url) as client:
            client.get(
                api.url("/orders/7"), callback="Shop::OrderFetched", callback_args={"order": 7}
            )
        worker.wait_for(record.exists, "the application's callback")
        worker.process.send_signal(signal.SIGTERM)
        assert worker.wait() == 0, worker.tail()
    [entry] = [json.loads(line) for line in record.read_text().splitlines()]
    assert entry["status"] == 200
    assert entry["json"] == {"path": "/orders/7", "ok": True}
    assert entry["order"] == 7
    # The worker ran the installed wheel, not this checkout.
    assert Path(entry["package"]).is_relative_to(site)
